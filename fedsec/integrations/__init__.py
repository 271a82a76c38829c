"""fedsec inside other FL engines.

- ``fedsec.integrations.flower``: a Flower server strategy that aggregates through fedsec's
  attacks and defenses, and a client-side data-poisoning helper (``pip install
  "fedsec[flower]"``).
- ``fedsec.integrations.fedml``: ``FedMLAttacker`` / ``FedMLDefender`` with FedMLSecurity's
  interface, so FedML code moves to fedsec with an import change.

Importing this package imports no engine; each integration imports its own when imported.
"""
