"""Dataset generation of the data-creator plugin."""
