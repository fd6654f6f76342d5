"""Pictures of the study: ``attention`` (each word's map over the image, and every model side by
side), ``curves`` (training histories as CSV and PNG), ``scores`` (Figure 1: every model's scores
with their intervals), ``table1`` (Table 1 and its companion tables: columns, rows and notes), ``difference``
(the difference view's figures), ``viewer`` (every word's map, image by image, in an offline page)
and ``report`` (the offline HTML page)."""
