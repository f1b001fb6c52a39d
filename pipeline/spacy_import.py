"""Imported for its effect: spaCy without torch (``pipeline.words.import_spacy``), for a forkserver's preload
list, which names modules. The executor imports that list in order, so this comes before ``spacy.lang.*``."""

from pipeline.words import import_spacy

import_spacy()
