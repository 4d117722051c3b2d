"""The validation report: results from every suite rendered as JSON and Markdown."""
