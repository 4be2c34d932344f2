"""Usage: the writer the router hands attempts to (writer.py, all the router loads), and the
analytics beside it: the console's queries, the rollups they read, the CSV export, demo data and
the seed's three monitoring queries. This file imports nothing, so the router loads none of them.
"""
