//! drd-kube: placeholder, built by its issue.
