"""The review web UI and its JSON API: clinicians check and correct the model's labels, page by page."""
