"""The auditor API's logic, apart from HTTP: the Patient Monitoring Form, the form deadline,
the per-clinic daily compliance summary, and the audit record of every API query."""
