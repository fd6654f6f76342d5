"""Pictures of the study: ``attention`` (each word's map over the image, and every model side by
side), ``curves`` (training histories as CSV and PNG) and ``report`` (the offline HTML page)."""
