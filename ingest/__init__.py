"""Files in, pages out: watching, claiming, sniffing, decoding, rendering and cleaning.

This layer knows nothing of Celery, databases or torch; it hands pages and reasons to its caller.
"""
