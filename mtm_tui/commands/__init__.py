"""The `mtm` commands, one module per kind of work, all registered on `base.app` (run by `mtm_tui.cli`)."""
