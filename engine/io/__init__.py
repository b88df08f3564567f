"""Storage and bytes: the one seam to fsspec (`storage`), listing by hour prefix (`listing`), and fetching objects
as newline-aligned pieces with gzip handled (`fetch`)."""
