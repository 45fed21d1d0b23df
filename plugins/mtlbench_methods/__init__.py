"""The built-in methods of mtlbench, registered through entry points like any other plugin."""
