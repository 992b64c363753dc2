"""A team's own traffic: import its log, label a sample by running every tier, export the
labels as a recorded-outcome file (docs/own-traffic.md).

- `importer`: `tierroute import`, a JSONL or CSV log into the query log, with its text.
- `labelling`: `tierroute label`, every tier's answer to a stratified sample of logged
  questions, graded by a reference judge, within a spend limit, resumable.
- `export`: `tierroute export`, the labelled sample in the shared recorded-outcome schema.
"""
