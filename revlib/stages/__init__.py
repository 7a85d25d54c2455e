"""What each notebook stage runs, so its cells stay a heading's call, a figure or a table.

One module per stage (base_model 00, reverse_data 01, sft 02, dpo 03, dynamics 04, benchmarks 05, scaling 06, star
07) holds its steps in order; a stage too big for one module keeps beside it its saved types (`scaling_result`,
`star_result`), its read-outs (`scaling_readout`) and its report (`scaling_report`, `scaling_figures`, `star_report`).
`context` names what they read from the notebook's context (revlib.lab.context, a layer up), and `maybe` shows a
report part a run may not have.
"""
