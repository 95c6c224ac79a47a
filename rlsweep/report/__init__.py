"""Reports of finished sweeps: local HTML, W&B summary runs and reports, confirmation stats."""
