"""The fake mobsms itself: history, pagination, filters, lookups, delete, cancel, devices, webhooks, auth."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import requests

from tests.harness.fakes.mobsms import FakeMobsms

AUTH = {"Authorization": "Bearer mobsms-key-1", "Accept": "application/json"}


def get(fake: FakeMobsms, path: str, **params: object) -> requests.Response:
    return requests.get(fake.url + path, params=params, headers=AUTH, timeout=5)


def test_every_endpoint_refuses_a_missing_or_unknown_key(fake_mobsms: FakeMobsms) -> None:
    for method, path in [("GET", "/api/sms"), ("GET", "/api/sms/101"), ("DELETE", "/api/sms/101")]:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = requests.request(method, fake_mobsms.url + path, headers=headers, timeout=5)
            assert (answer.status_code, answer.json()) == (
                401,
                {"success": False, "message": "Unauthenticated."},
            )


def test_sends_join_the_history_as_pending(fake_mobsms: FakeMobsms) -> None:
    body = {
        "message": "Hi",
        "recipient_number": "+32470000001",
        "my_id": "o-1",
        "callback_url": "https://x.test/cb",
    }
    sent = requests.post(fake_mobsms.url + "/api/sms", json=body, headers=AUTH, timeout=5).json()["data"]
    [stored] = fake_mobsms.messages
    assert sent == fake_mobsms.queued[0]
    assert stored["message_id"] == sent["message_id"]
    assert (stored["status"], stored["message"], stored["my_id"]) == ("pending", "Hi", "o-1")
    assert (stored["callback_url"], stored["device_id"]) == ("https://x.test/cb", 5)
    assert get(fake_mobsms, f"/api/sms/{sent['id']}").json()["data"] == stored


def test_list_is_newest_first_paginated_and_filtered(fake_mobsms: FakeMobsms) -> None:
    fake_mobsms.per_page = 2
    old = fake_mobsms.add_outbound("+32470000001", "old", created_at=datetime(2026, 6, 8, 9, tzinfo=UTC))
    failed = fake_mobsms.add_outbound("+32470000002", "failed", status="failed", created_at=1780912800)
    inbound = fake_mobsms.add_inbound("+32470000003", "hello", created_at="2026-06-08T11:00:00Z")
    other = fake_mobsms.add_outbound("+32470000004", "other device", device_id=6, created_at=1780920000)

    first = get(fake_mobsms, "/api/sms").json()["data"]
    second = get(fake_mobsms, "/api/sms", page=2).json()["data"]
    assert [m["id"] for m in first["data"] + second["data"]] == [
        other["id"],
        inbound["id"],
        failed["id"],
        old["id"],
    ]
    assert (first["current_page"], first["per_page"], first["total"], first["last_page"]) == (1, 2, 4, 2)
    assert get(fake_mobsms, "/api/sms", page=3).json()["data"]["data"] == []
    assert get(fake_mobsms, "/api/sms", per_page=10).json()["data"]["last_page"] == 1

    def ids(path: str, **params: object) -> list[int]:
        return [m["id"] for m in get(fake_mobsms, path, per_page=10, **params).json()["data"]["data"]]

    assert ids("/api/sms", direction="inbound") == ids("/api/sms/inbox") == [inbound["id"]]
    assert ids("/api/sms", status="failed") == [failed["id"]]
    assert ids("/api/sms", device_id=6) == [other["id"]]
    assert ids("/api/sms/outbox") == [other["id"], failed["id"], old["id"]]
    assert get(fake_mobsms, "/api/sms/inbox").json()["data"]["data"][0] == {
        "id": inbound["id"],
        "sender_number": "+32470000003",
        "message": "hello",
        "status": "received",
        "direction": "inbound",
        "created_at": "2026-06-08T11:00:00.000000Z",
    }


def test_unknown_messages_are_404_and_delete_removes(fake_mobsms: FakeMobsms) -> None:
    stored = fake_mobsms.add_outbound("+32470000001", "Hi")
    missing = {"message": "No query results for model [SmsMessage]."}
    for method in ("GET", "DELETE", "PUT"):
        answer = requests.request(method, fake_mobsms.url + "/api/sms/999999", headers=AUTH, timeout=5)
        assert (answer.status_code, answer.json()) == (404, missing)
    assert get(fake_mobsms, "/api/sms/" + stored["message_id"]).json()["data"]["id"] == stored["id"]
    deleted = requests.delete(fake_mobsms.url + "/api/sms/" + stored["message_id"], headers=AUTH, timeout=5)
    assert deleted.json() == {"success": True, "message": "SMS deleted successfully"}
    assert fake_mobsms.messages == []
    assert get(fake_mobsms, f"/api/sms/{stored['id']}").status_code == 404


def test_only_pending_messages_can_be_cancelled(fake_mobsms: FakeMobsms) -> None:
    pending = fake_mobsms.add_outbound("+32470000001", "Hi", status="pending")
    url = f"{fake_mobsms.url}/api/sms/{pending['id']}/cancel"
    assert requests.post(url, headers=AUTH, timeout=5).json()["data"] == {
        "id": pending["id"],
        "status": "cancelled",
    }
    again = requests.post(url, headers=AUTH, timeout=5)
    assert (again.status_code, again.json()) == (
        422,
        {"success": False, "message": "Only pending messages can be cancelled"},
    )


def test_update_and_set_status(fake_mobsms: FakeMobsms) -> None:
    stored = fake_mobsms.add_outbound("+32470000001", "Hi", status="pending")
    fake_mobsms.set_status(stored["message_id"], "failed", "Generic failure")
    assert (stored["status"], stored["error_message"]) == ("failed", "Generic failure")
    url = f"{fake_mobsms.url}/api/sms/{stored['id']}"
    answer = requests.patch(url, json={"status": "delivered"}, headers=AUTH, timeout=5).json()
    assert answer == {
        "success": True,
        "data": {"id": stored["id"], "status": "delivered"},
        "message": "SMS updated successfully",
    }
    assert stored["delivered_at"] is not None
    assert requests.put(url, json={"status": "lost"}, headers=AUTH, timeout=5).status_code == 422
    with pytest.raises(KeyError):
        fake_mobsms.set_status(999999, "sent")


def test_devices_and_webhooks(fake_mobsms: FakeMobsms) -> None:
    [device] = get(fake_mobsms, "/api/devices").json()["data"]
    assert (device["id"], device["device_id"], device["is_default"]) == (5, "abc123", True)
    assert get(fake_mobsms, "/api/webhooks").json()["data"] == {
        "webhook_url_incoming": None,
        "webhook_url_status": None,
    }
    hooks = {"webhook_url_incoming": "https://x.test/in", "webhook_url_status": "https://x.test/st"}
    answer = requests.put(fake_mobsms.url + "/api/webhooks", json=hooks, headers=AUTH, timeout=5).json()
    assert answer == {"success": True, "data": hooks, "message": "Webhooks updated successfully"}
    assert get(fake_mobsms, "/api/webhooks").json()["data"] == hooks == fake_mobsms.webhooks
