//! drd-db: placeholder, built by its issue.
