"""The BERT-style filter classifier (train / evaluate / infer / save). Its code lands with the
annotation-and-filter work; the package exists now because the project layout fixes it."""
