"""JSON schemas of answers, from SMSMobileAPI's public OpenAPI file (specs/smsmobileapi-public-facts.md)."""

SENDSMS = {
    "type": "object",
    "required": ["result"],
    "properties": {
        "result": {
            "type": "object",
            "required": ["error", "sent", "id", "note", "datetime", "send_with_whatsapp"],
            "properties": {
                "error": {"type": ["string", "integer"]},
                "sent": {"type": "string"},
                "id": {"type": "string"},
                "note": {"type": "string"},
                "datetime": {"type": "string", "format": "date-time"},
                "send_with_whatsapp": {"type": "string"},
            },
            "additionalProperties": True,
        }
    },
}

GETSMS = {
    "type": "object",
    "required": ["result"],
    "properties": {
        "result": {
            "type": "object",
            "required": ["error", "sms"],
            "properties": {
                "error": {"type": "string"},
                "sms": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": [
                            "id",
                            "sIdentifiantPhone",
                            "timestamp_unix",
                            "message",
                            "number",
                            "guid",
                            "alias",
                        ],
                        "properties": {
                            "id": {"type": "integer"},
                            "sIdentifiantPhone": {"type": "string"},
                            "timestamp_unix": {"type": "integer"},
                            "message": {"type": "string"},
                            "number": {"type": "string"},
                            "guid": {"type": "string"},
                            "alias": {"type": ["string", "null"]},
                        },
                    },
                },
            },
        }
    },
}

WHATSAPP_SYNCHRONISATION = {
    "type": "object",
    "required": ["error", "messages", "expire_at", "expire_at_unix"],
    "properties": {
        "error": {"type": "string"},
        "messages": {"type": "string"},
        "expire_at": {"type": "string"},
        "expire_at_unix": {"type": "string"},
    },
}

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {"error": {"type": ["string", "integer"]}, "message": {"type": "string"}},
}

#: `/getwa/`: an object, as the OpenAPI says (it fixes no properties); the bridge's envelope and the entries
#: as the vendor's WhatsApp docs show them
GETWA = {
    "type": "object",
    "required": ["error", "count", "messages"],
    "properties": {
        "error": {"type": "string"},
        "count": {"type": "integer", "minimum": 0},
        "messages": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["date", "hour", "timestamp", "number", "contact", "message", "guid", "more"],
                "properties": {
                    "date": {"type": "string"},
                    "hour": {"type": "string"},
                    "timestamp": {"type": "string"},
                    "number": {"type": "string"},
                    "contact": {"type": "string"},
                    "message": {"type": "string"},
                    "message_type": {"enum": ["text", "audio"]},
                    "guid": {"type": "string"},
                    "more": {"type": "object"},
                },
            },
        },
    },
}
