#!/usr/bin/env python3
"""Encodes texts with Hugging Face `tokenizers`, the reference gridbox's BPE reader is checked
against: reads {"tokenizer": PATH, "texts": [...]} as JSON on stdin, prints
{"ids": [[...], ...], "decoded": [...]} as JSON."""
import json
import sys

from tokenizers import Tokenizer

request = json.load(sys.stdin)
tokenizer = Tokenizer.from_file(request["tokenizer"])
encodings = [tokenizer.encode(text, add_special_tokens=False).ids for text in request["texts"]]
json.dump({"ids": encodings, "decoded": [tokenizer.decode(ids, skip_special_tokens=False) for ids in encodings]}, sys.stdout)
