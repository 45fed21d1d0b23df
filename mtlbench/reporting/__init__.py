"""`mtlbench report`: a self-contained HTML report of a run, with its figures as PNG files.

Everything comes from the store, so a run folder copied to another machine renders the same
report without the dataset or the models:

- leaderboard (mtlbench.report's rows and cells) with the paper's published numbers (the
  method cards' ``published``) beside ours;
- per-fold box plots of every leaderboard metric;
- statistics (mtlbench.stats): pooled per-image means with bootstrap intervals and Wilcoxon
  signed-rank tests against the best method, Holm-corrected;
- training curves, the mean over folds per method;
- a qualitative grid as the paper's Fig. 7: input, ground truth and each method's predicted
  mask for a few test cases. The masks of every test case are stored by each trial; the inputs
  and ground truths only for a few gallery cases per class and fold (mtlbench.predictions), and
  the grid picks among those (mtlbench.reporting.grid).

The page embeds its images as data URIs (no external file, font or script); the same figures
are written to ``figures/*.png`` beside it for papers and slides.
"""

from mtlbench.reporting.build import ReportError, write_report

__all__ = ["ReportError", "write_report"]
