"""Where buckets live when several hosts share them (the default memory backend needs nothing here)."""
