"""Generation on ids: choosing the next token, the decode loop with the KV cache, greedy and beam search."""
