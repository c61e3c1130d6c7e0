"""The comparison point for the accept benchmark: Flask that only parses the form.

Same route, same body, same gunicorn settings as Formpost's POST /f/default;
no validation, no composition, no storage.
"""

from flask import Flask, jsonify, request

app = Flask(__name__)


@app.post("/f/default")
def submit():
    fields = list(request.form.items(multi=True))
    return jsonify(ok=True, id=str(len(fields))), 200
