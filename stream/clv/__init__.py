"""Customer lifetime value: the BG/NBD and Gamma-Gamma models (``model``) and what a fitted,
stored model predicts for one customer (``prediction``). Pure; fitted by ``stream.shell.refit``."""
