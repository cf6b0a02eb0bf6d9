"""Tests of app/fronts/smsmobileapi/: REST and SOAP, hostile XML, OAuth2 tokens, the vendor's contract."""
