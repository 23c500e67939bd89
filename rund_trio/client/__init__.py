"""The client side: an async API over one mTLS connection to the daemon."""
