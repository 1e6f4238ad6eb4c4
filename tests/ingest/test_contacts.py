"""One customer, whatever Meta calls them: ingest's contact rules (ADR 0117): merging contacts
(phone number first, BSUID first, two contacts named by one webhook), a BSUID change."""

from datetime import UTC, datetime, timedelta

import pytest
from parley_ingest.domain.contacts import (
    BsuidChange,
    Contact,
    ContactBatch,
    NoIdentifier,
    Sighting,
    change_bsuid,
    resolve,
)

T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
H = timedelta(hours=1)
PHONE = "447700900123"
BSUID = "GB.13491208655302741918"
NEW_BSUID = "GB.55500011122233344455"
PARENT = "GB.ENT.99887766554433221100"


def test_phone_first_then_a_webhook_with_phone_and_bsuid_completes_the_same_contact() -> None:
    first = resolve([], Sighting(phone=PHONE), T0).contact
    assert first.contact_id == PHONE and first.bsuid is None
    later = resolve([first], Sighting(phone=PHONE, bsuid=BSUID, username="ann"), T0 + H)
    assert not later.merged
    assert later.contact == Contact(PHONE, T0, PHONE, BSUID, None, "ann")


def test_bsuid_first_then_the_phone_number_is_the_same_contact_keyed_by_the_bsuid() -> None:
    first = resolve([], Sighting(bsuid=BSUID, username="ann"), T0).contact
    assert first.contact_id == BSUID and first.phone is None
    assert first.address == ("recipient", BSUID)
    later = resolve([first], Sighting(phone=PHONE, bsuid=BSUID), T0 + H).contact
    assert (later.contact_id, later.phone, later.bsuid, later.username) == (BSUID, PHONE, BSUID, "ann")
    assert later.address == ("to", PHONE)


def test_two_contacts_named_by_one_webhook_are_merged_into_the_older() -> None:
    by_phone = resolve([], Sighting(phone=PHONE), T0).contact
    by_user = resolve([], Sighting(bsuid=BSUID, parent_bsuid=PARENT, username="ann"), T0 + H).contact
    merged = resolve([by_user, by_phone], Sighting(phone=PHONE, bsuid=BSUID), T0 + 2 * H)
    assert merged.absorbed == (BSUID,)
    assert merged.contact == Contact(PHONE, T0, PHONE, BSUID, PARENT, "ann")


def test_a_bsuid_change_moves_the_contact_and_keeps_its_key() -> None:
    contact = resolve([], Sighting(bsuid=BSUID), T0).contact
    moved = change_bsuid(contact, BSUID, NEW_BSUID)
    assert (moved.contact_id, moved.bsuid) == (BSUID, NEW_BSUID)
    assert moved.address == ("recipient", NEW_BSUID)
    # The next webhook carries only the new id: it finds the same contact.
    again = resolve([moved], Sighting(bsuid=NEW_BSUID), T0 + H)
    assert again.contact.contact_id == BSUID and not again.merged
    # A change naming another id leaves the contact alone.
    assert change_bsuid(moved, "GB.1", "GB.2") == moved


def test_a_sighting_naming_nobody_is_refused() -> None:
    with pytest.raises(NoIdentifier):
        resolve([], Sighting(username="ann"), T0)




# --- a batch (one webhook or request): what ingest writes and stamps -------------------------

def test_a_batch_phone_first_then_bsuid_keys_both_identifiers_on_the_phone_contact() -> None:
    batch = ContactBatch({})
    batch.see(Sighting(phone=PHONE), T0)
    batch.see(Sighting(phone=PHONE, bsuid=BSUID, username="ann"), T0 + H)
    assert batch.key_of(PHONE) == batch.key_of(BSUID) == PHONE
    assert batch.changed[PHONE].username == "ann" and not batch.absorbed


def test_a_batch_bsuid_first_then_phone_keeps_the_bsuid_key() -> None:
    batch = ContactBatch({})
    batch.see(Sighting(bsuid=BSUID, username="ann"), T0)
    batch.see(Sighting(phone=PHONE, bsuid=BSUID), T0 + H)
    assert batch.key_of(PHONE) == batch.key_of(BSUID) == BSUID
    assert batch.changed[BSUID].address == ("to", PHONE)


def test_a_batch_merging_two_stored_contacts_names_the_absorbed_one() -> None:
    by_phone = Contact(PHONE, T0, PHONE)
    by_user = Contact(BSUID, T0 + H, None, BSUID, None, "ann")
    batch = ContactBatch({PHONE: by_phone, BSUID: by_user})
    batch.see(Sighting(phone=PHONE, bsuid=BSUID), T0 + 2 * H)
    assert batch.absorbed == {PHONE: [BSUID]}
    assert batch.key_of(BSUID) == PHONE and BSUID not in batch.changed


def test_a_batch_bsuid_change_moves_the_contact_and_the_old_id_still_finds_it() -> None:
    stored = Contact(BSUID, T0, None, BSUID)
    batch = ContactBatch({BSUID: stored})
    batch.change(BsuidChange(BSUID, NEW_BSUID), T0 + H)
    assert batch.key_of(NEW_BSUID) == batch.key_of(BSUID) == BSUID
    assert batch.changed[BSUID].bsuid == NEW_BSUID


def test_a_bsuid_change_to_an_id_that_already_wrote_merges_the_two() -> None:
    old = Contact(BSUID, T0, None, BSUID)
    new = Contact(NEW_BSUID, T0 + H, None, NEW_BSUID)
    batch = ContactBatch({BSUID: old, NEW_BSUID: new})
    batch.change(BsuidChange(BSUID, NEW_BSUID), T0 + 2 * H)
    assert batch.absorbed == {BSUID: [NEW_BSUID]} and batch.key_of(NEW_BSUID) == BSUID


def test_a_user_id_update_webhook_is_read_as_a_bsuid_change_of_the_tenants_contact() -> None:
    from parley_common.meta import normalise_webhook
    from parley_ingest.contacts import Resolved, stamp, work_of_webhook

    class OneTenant:
        def tenant_for(self, phone_number_id: str | None, waba_id: str | None) -> str | None:
            return "shop"

    doc = {"object": "whatsapp_business_account", "entry": [{"id": "waba1", "changes": [{
        "field": "user_id_update",
        "value": {"messaging_product": "whatsapp",
                  "metadata": {"display_phone_number": "15550001", "phone_number_id": "pn1"},
                  "user_id_update": [{"user_id": {"previous": BSUID, "current": NEW_BSUID},
                                      "timestamp": "1764000000"}]}}]}]}
    normalised = normalise_webhook(doc, received_at=T0, tenants=OneTenant())
    work, numbers = work_of_webhook(normalised)
    assert [c for c, _ in work["shop"].changes] == [BsuidChange(BSUID, NEW_BSUID)] and numbers == {"shop": "pn1"}
    stamped = stamp(normalised, Resolved({("shop", BSUID): BSUID, ("shop", NEW_BSUID): BSUID}, []))
    assert stamped.account_events[0].contacts == {BSUID: BSUID, NEW_BSUID: BSUID}


def test_an_identifier_no_person_could_have_is_no_sighting() -> None:
    from parley_ingest.domain.contact_events import IDENTIFIER_MAX, identifier

    for nobody in ("", "\x00", "1650555\x001234", "user\tname", "9" * (IDENTIFIER_MAX + 1), 16505551234, None):
        assert identifier(nobody) is None, nobody
    for person in ("16505551234", "US.13491208655302741918", "US.ENT.11815799212886844830", "sheena.n", "9" * 256):
        assert identifier(person) == person
