"""POST /f/<form> end to end, by topic: other sites' forms in, the real relay out."""
