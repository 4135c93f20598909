"""Text to ids: tokenizers, batches, `data prepare` and its shards, `data fetch`, the bundled corpus."""
