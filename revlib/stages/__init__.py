"""What each notebook stage runs, so its cells stay a heading's call, a figure or a table.

One module per stage (base_model 00, reverse_data 01, sft 02, dpo 03, dynamics 04, benchmarks 05, scaling and
scaling_figures 06, star 07); `context` names what they read from the notebook's context (revlib.lab.context,
a layer up), and `maybe` shows a report part a run may not have.
"""
