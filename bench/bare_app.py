"""The baseline of the benchmark: a bare Flask JSON route, served by the same gunicorn configuration.

It answers what the bridge answers for one SMS sent, without doing any of the work, so that the
benchmark can show what smsbridge costs on top of gunicorn and Flask themselves.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.route("/sendsms/", methods=["GET", "POST"])
def sendsms():
    return jsonify(result={"error": 0, "sent": "1", "id": "bench"})
