"""Tables, figures and the summary page from result files: torch-free, so a table can be remade
without importing PyTorch."""
