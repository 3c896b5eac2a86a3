"""The dashboard the worker serves at `/`: a page app in plain HTML, CSS and JavaScript modules (no build step)."""
