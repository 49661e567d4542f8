//! drd-dns: placeholder, built by its issue.
