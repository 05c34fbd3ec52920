"""Latents on disk and FAISS indexes over them.

    store.py   latents.h5: streaming writer and lazy reader (latents, ids, labels, encoder metadata)
    index.py   FAISS indexes: build (index_factory, default by size), tune, search, save/load, merge
    embed.py   latents folders: embed a dataset, search by image or id, merge shard parts, describe

Importing the package imports neither torch nor faiss.
"""
