"""What the tests are built from: real servers on 127.0.0.1 and the helpers that talk to them.

No test module imports another (tests/test_layout.py checks it): what two of them share lives here, and
the fixtures built on it in tests/conftest.py (or in the conftest.py of the one folder using them). The
harness's own tests are in tests/harness_selftest/.

    bridge.py       LiveBridge (the bridge served from a thread of the test process); GOOD_KEY,
                    UNICODE_TEXT, BACKENDS
    gunicorn.py     Gunicorn (the bridge under real gunicorn in a child process), GUNICORN, ROOT,
                    gunicorn_env; start_bridge, served_by, ready_workers (which worker answered, from
                    the access log); log_lines (the request log's JSON lines)
    net.py          free_port, closed_port_url, port_of, stop_quickly
    redis.py        RedisServer (a real redis-server: stop, restart, freeze, thaw), fingerprint
    postgres.py     PostgresServer (a throwaway cluster: stop, restart, freeze, thaw, create_database)
    hosts.py        Host, Hosts, shared_env: bridges on several "machines" (own gunicorn masters and
                    data directories, one PostgreSQL/Redis/token secret/clients file); kill, pause, restart
    browser.py      Browser (headless Debian Chromium through Playwright; nothing leaves 127.0.0.1),
                    screenshot, screenshots_taken, SCREENSHOTS
    newman.py       run_collection (the vendor's Postman collection against 127.0.0.1), NewmanRun
    soap.py         envelope (a sendSms envelope by hand), fault_of (a SOAP 1.1 fault, checked)
    clients.py      clients files: write_clients, clients_toml, and the keys and clients tests share
    oauth.py        OAuth2 as a client uses it: CLIENTS, token_for, bearer, send_with,
                    assert_token_refused
    passthrough.py  managed_vendor_app: a managed smsmobileapi client in front of OPERATOR_KEY
    webhooks.py     the client's receivers (Receiver, V1Receiver, V2Receiver, Redirecting, Endless),
                    mobsms_post, events_in, urls_of, gunicorn_source_url, wait_for; SECRET,
                    TOKEN_SECRET, SENDER, RECEIVED_AT
    fakes/          the fake upstreams and network parties, each a real server on 127.0.0.1:
                    server.py (FakeUpstream, the base: records requests, misbehaves on command),
                    mobsms.py, smsmobileapi.py, forward_proxy.py, raw_http.py, listener.py
    php/            the PHP SOAP clients tests/fronts/smsmobileapi/test_soap_php.py runs (nusoap, SoapClient)

Plain `assert`s here are rewritten by pytest as in test modules (tests/__init__.py registers the
package), so a failing check in a helper reports its values too.
"""
