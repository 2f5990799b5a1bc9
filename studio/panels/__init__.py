"""One module per tab, plus the results column."""
