"""The seven channels, each drawn from the people with its own fields and its own mess: CRM
contacts, web sign-ups, orders, support interactions, consent events, surveys, privacy requests."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import polars as pl

from cdm_pipeline.demo.noise import (
    blank,
    country_spelling,
    formatted_phone,
    full_names,
    messy_birth,
    messy_email,
    messy_names,
    messy_street,
    sample,
    timestamps,
    typo,
)
from cdm_pipeline.demo.people import TODAY, make_frame


def crm(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = sample(persons, 0.65, 1.04, rng)
    n = p.height
    first, last = messy_names(p, rng)
    has_old_email = p["old_email"].is_not_null().to_numpy()
    moved = p["old_street"].is_not_null().to_numpy()
    email = np.where(has_old_email, p["old_email"].to_numpy(), p["email"].to_numpy())
    street = np.where(moved, p["old_street"].to_numpy(), p["street"].to_numpy())
    pick = lambda col: np.where(moved, p[f"old_{col}"].to_numpy(), p[col].to_numpy())  # noqa: E731
    birth = p["birth_date"].to_numpy().astype("datetime64[D]")
    birth_text = messy_birth(birth, rng)
    created = timestamps(n, rng, 2500)
    # Records of people who later changed email or moved are older, so "most recent" rules prefer
    # the newer channels.
    age = np.where(has_old_email | moved, rng.integers(400, 900, n), rng.integers(0, 300, n))
    updated = (np.datetime64(TODAY) - (age * 86400).astype("timedelta64[s]")).astype(
        "datetime64[s]"
    )
    created = np.minimum(created, updated)
    frame = make_frame(
        {
            "contact_id": [f"C{i:07d}" for i in range(1, n + 1)],
            "first_name": blank(first, 0.02, rng),
            "last_name": blank(last, 0.01, rng),
            "email": blank(messy_email(email, rng), 0.05, rng),
            "phone": blank(
                formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.08,
                rng,
            ),
            "street": blank(messy_street(street, rng), 0.05, rng),
            "city": blank(pick("city"), 0.03, rng),
            "state": pick("state"),
            "postal_code": blank(pick("postal_code"), 0.04, rng),
            "country": country_spelling(p["country"].to_numpy(), rng),
            "birth_date": blank(birth_text, 0.15, rng),
            "created_at": created.astype(str),
            "updated_at": updated.astype(str),
            "account_owner": np.array(["alice.owner", "bruno.owner", "chen.owner", "dana.owner"])[
                rng.integers(0, 4, n)
            ],
        },
        schema_overrides={
            c: pl.String
            for c in (
                "first_name",
                "last_name",
                "email",
                "phone",
                "street",
                "city",
                "postal_code",
                "birth_date",
            )
        },
    )
    return frame, p["person_id"].to_numpy()


def web(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = sample(persons, 0.40, 1.05, rng)
    n = p.height
    first, last = messy_names(p, rng)
    frame = make_frame(
        {
            "signup_id": [f"W{i:07d}" for i in range(1, n + 1)],
            "full_name": blank(full_names(first, last, rng), 0.03, rng),
            "email": messy_email(p["email"].to_numpy(), rng),
            "phone": blank(
                formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.55,
                rng,
            ),
            "country": country_spelling(p["country"].to_numpy(), rng),
            "marketing_opt_in": rng.random(n) < 0.55,
            "signed_up_at": np.char.replace(timestamps(n, rng, 900).astype(str), "T", " "),
            "utm_source": np.array(
                ["google", "facebook", "newsletter", "direct", "instagram"], dtype=object
            )[rng.integers(0, 5, n)],
            "device": np.array(["mobile", "desktop", "tablet"], dtype=object)[
                rng.integers(0, 3, n)
            ],
        },
        schema_overrides={"full_name": pl.String, "phone": pl.String},
    )
    return frame, p["person_id"].to_numpy()


def orders(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = sample(persons, 0.50, 2.2, rng)
    n = p.height
    first, last = messy_names(p, rng)
    amount = np.round(rng.lognormal(3.8, 0.8, n), 2)
    currency = np.select(
        [p["country"].to_numpy() == "GB", np.isin(p["country"].to_numpy(), ["DE", "FR"])],
        ["GBP", "EUR"],
        "USD",
    )
    frame = make_frame(
        {
            "order_id": [f"O{i:08d}" for i in range(1, n + 1)],
            "customer_email": blank(messy_email(p["email"].to_numpy(), rng), 0.02, rng),
            "billing_name": blank(full_names(first, last, rng), 0.02, rng),
            "billing_phone": blank(
                formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng),
                0.3,
                rng,
            ),
            "shipping_street": messy_street(p["street"].to_numpy(), rng),
            "shipping_city": p["city"].to_numpy(),
            "shipping_state": p["state"].to_numpy(),
            "shipping_postal_code": p["postal_code"].to_numpy(),
            "shipping_country": p["country"].to_numpy(),
            "ordered_at": timestamps(n, rng, 365).astype("datetime64[us]"),
            "amount": amount,
            "currency": currency,
            "status": np.array(
                ["placed", "shipped", "delivered", "cancelled", "returned"], dtype=object
            )[rng.choice(5, n, p=[0.1, 0.15, 0.65, 0.05, 0.05])],
        },
        schema_overrides={
            "customer_email": pl.String,
            "billing_name": pl.String,
            "billing_phone": pl.String,
        },
    )
    return frame, p["person_id"].to_numpy()


def support(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = sample(persons, 0.30, 1.6, rng)
    n = p.height
    first, last = messy_names(p, rng)
    channel = np.array(["voice", "chat", "email", "sms"], dtype=object)[
        rng.choice(4, n, p=[0.4, 0.3, 0.2, 0.1])
    ]
    by_phone = np.isin(channel, ["voice", "sms"])
    phone = formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng)
    frame = make_frame(
        {
            "interaction_id": [f"I{i:08d}" for i in range(1, n + 1)],
            "channel": channel,
            "caller_phone": np.where(by_phone, phone, None),
            "from_address": np.where(by_phone, None, messy_email(p["email"].to_numpy(), rng)),
            "customer_name": blank(
                np.array(
                    [
                        typo(np.array([s]), 0.05, rng)[0] if s else s
                        for s in full_names(first, last, rng)
                    ],
                    dtype=object,
                ),
                0.1,
                rng,
            ),
            "started_at": timestamps(n, rng, 900).astype(str),
            "duration_seconds": rng.integers(30, 3600, n).astype(str),
            "agent_id": np.char.add("agent_", rng.integers(1, 60, n).astype(str)),
            "queue": np.array(["billing", "orders", "returns", "account"], dtype=object)[
                rng.integers(0, 4, n)
            ],
            "topic": np.array(
                ["refund", "delivery", "password", "complaint", "product question"], dtype=object
            )[rng.integers(0, 5, n)],
            "resolution": np.array(
                ["resolved", "unresolved", "escalated", "pending"], dtype=object
            )[rng.choice(4, n, p=[0.7, 0.12, 0.08, 0.1])],
            "csat": blank(rng.integers(1, 6, n).astype(str), 0.4, rng),
        },
        schema_overrides={
            "caller_phone": pl.String,
            "from_address": pl.String,
            "customer_name": pl.String,
            "csat": pl.String,
        },
    )
    return frame, p["person_id"].to_numpy()


def consent(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = sample(persons, 0.35, 1.8, rng)
    n = p.height
    purpose = np.array(
        ["email_marketing", "sms_marketing", "analytics", "third_party_sharing"], dtype=object
    )[rng.choice(4, n, p=[0.45, 0.2, 0.2, 0.15])]
    sms = purpose == "sms_marketing"
    phone = formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng)
    frame = make_frame(
        {
            "event_id": [f"E{i:08d}" for i in range(1, n + 1)],
            "email": np.where(sms, None, messy_email(p["email"].to_numpy(), rng)),
            "phone": np.where(sms, phone, None),
            "purpose": purpose,
            "action": np.where(rng.random(n) < 0.7, "grant", "revoke"),
            "event_at": timestamps(n, rng, 700).astype(str),
            "source": np.array(
                ["preference_center", "web_form", "unsubscribe_link", "call_center"], dtype=object
            )[rng.integers(0, 4, n)],
        },
        schema_overrides={"email": pl.String, "phone": pl.String},
    )
    return frame, p["person_id"].to_numpy()


def surveys(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = sample(persons, 0.15, 1.2, rng)
    n = p.height
    nps = rng.choice(11, n, p=[0.03, 0.02, 0.03, 0.04, 0.05, 0.08, 0.1, 0.15, 0.18, 0.17, 0.15])
    comments = np.array(
        [
            "Great service",
            "Delivery was late",
            "Love the product",
            "Too expensive",
            "Support never called back",
            "",
            "Easy checkout",
            "Package arrived damaged",
        ],
        dtype=object,
    )
    frame = make_frame(
        {
            "response_id": [f"S{i:07d}" for i in range(1, n + 1)],
            "email": messy_email(p["email"].to_numpy(), rng),
            "nps": nps.astype(object),
            "comment": comments[rng.integers(0, len(comments), n)],
            "submitted_at": timestamps(n, rng, 500).astype(str),
        }
    )
    return frame, p["person_id"].to_numpy()


def _request_times(times: np.ndarray) -> np.ndarray:
    """Privacy requests arrive in the days before the demo is generated, not before the fixed
    demo date: their legal deadlines (30 or 45 days) lie ahead whenever the demo is run."""
    shift = np.datetime64(datetime.now().replace(microsecond=0)) - np.datetime64(TODAY)
    shifted = times.astype("datetime64[s]") + max(shift, np.timedelta64(0, "s"))
    return shifted.astype("datetime64[s]").astype(str)


def privacy(persons: pl.DataFrame, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    p = persons.filter(pl.Series(rng.random(persons.height) < 0.006))
    n = p.height
    by_email = rng.random(n) < 0.7
    phone = formatted_phone(p["phone_national"].to_numpy(), p["country"].to_numpy(), rng)
    frame = make_frame(
        {
            "request_id": [f"R{i:06d}" for i in range(1, n + 1)],
            "request_type": np.where(rng.random(n) < 0.6, "erasure", "access"),
            "email": np.where(by_email, p["email"].to_numpy(), None),
            "phone": np.where(by_email, None, phone),
            "name": np.char.add(
                np.char.add(p["first_name"].to_numpy().astype(str), " "),
                p["last_name"].to_numpy().astype(str),
            ),
            "received_at": _request_times(timestamps(n, rng, 20)),
            "jurisdiction": np.where(p["country"].to_numpy() == "US", "CCPA", "GDPR"),
        },
        schema_overrides={"email": pl.String, "phone": pl.String},
    )
    # One request that matches nobody, for the steward queue.
    nobody = pl.DataFrame(
        {
            "request_id": ["R999999"],
            "request_type": ["erasure"],
            "email": ["nobody.known@example.org"],
            "phone": [None],
            "name": ["Nobody Known"],
            "received_at": _request_times(np.array([np.datetime64(TODAY)])),
            "jurisdiction": ["GDPR"],
        },
        schema=frame.schema,
    )
    return pl.concat([frame, nobody]), np.concatenate([p["person_id"].to_numpy(), [0]])
