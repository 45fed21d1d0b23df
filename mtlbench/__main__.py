from mtlbench.cli import main

main()
