"""The chapter before transformers, on its own: the leaf/flower network, backprop by hand,
activations, dropout, XOR, humpty dumpty."""
