"""Reports: paper-style tables (Markdown, CSV) built from profiles and results."""
