"""One module per notebook stage that holds more than a call: what the notebook runs, so its cells stay a heading, a call and a figure."""
