"""The people side of the admin: users and family contacts (with their consents, added by rooms)."""

from __future__ import annotations

import pytest
from django.urls import reverse
from django.utils.html import escape

from accounts.models import FamilyContact, Role
from rooms.models import FamilyConsent
from tests.factories import enroll, make_program, make_track, make_user
from tests.rooms.test_admin import changelist_queries, make_contact, make_superuser, management


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def superuser(db):
    return make_superuser()


@pytest.fixture
def superuser_client(client, superuser):
    client.force_login(superuser)
    return client


PAGES = [
    "admin:accounts_user_changelist",
    "admin:accounts_user_add",
    "admin:accounts_familycontact_changelist",
    "admin:accounts_familycontact_add",
]


@pytest.mark.parametrize("url_name", PAGES)
def test_people_pages_open_for_superuser(superuser_client, clinic, url_name):
    assert superuser_client.get(reverse(url_name)).status_code == 200


@pytest.mark.parametrize("url_name", PAGES)
def test_people_pages_redirect_participant_to_login(client, clinic, url_name):
    client.force_login(clinic.participant)

    response = client.get(reverse(url_name))

    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_family_contact_page_lists_consents(superuser_client, clinic):
    contact = make_contact(clinic.participant)
    FamilyConsent.objects.create(contact=contact, program=clinic.program, consented_by=clinic.participant)

    response = superuser_client.get(reverse("admin:accounts_familycontact_change", args=[contact.pk]))

    assert [f.formset.prefix for f in response.context["inline_admin_formsets"]] == ["consents"]
    assert clinic.program.name in response.content.decode()


# --- query guards -----------------------------------------------------------------------------------------


def build_contacts(n: int) -> None:
    for _ in range(n):
        participant, track = make_user(), make_track(make_program())
        enroll(participant, track)
        contact = make_contact(participant)
        FamilyConsent.objects.create(contact=contact, program=track.program, consented_by=participant)


def build_users(n: int) -> None:
    for _ in range(n):
        make_user()


@pytest.mark.parametrize(
    "url_name, build",
    [
        ("admin:accounts_familycontact_changelist", build_contacts),
        ("admin:accounts_user_changelist", build_users),
    ],
)
def test_people_changelist_queries_do_not_grow_with_rows(
    superuser_client, django_assert_max_num_queries, url_name, build
):
    url = reverse(url_name)
    build(3)
    superuser_client.get(url)
    few, few_rows = changelist_queries(superuser_client, url)

    build(9)
    many, many_rows = changelist_queries(superuser_client, url)

    assert many_rows >= few_rows + 9
    assert many == few
    with django_assert_max_num_queries(10):
        superuser_client.get(url)


# --- family contacts -----------------------------------------------------------------------------------------


def contact_post(participant, **extra) -> dict:
    data = {
        "participant": str(participant.pk),
        "name": "Jordan Doe",
        "relationship": "spouse",
        "email": "jordan@example.org",
        "phone": "",
        **management("consents"),
    }
    data.update(extra)
    return data


def test_family_contact_is_recorded_with_who_recorded_it(superuser_client, superuser, clinic):
    response = superuser_client.post(reverse("admin:accounts_familycontact_add"), contact_post(clinic.participant))

    assert response.status_code == 302
    contact = FamilyContact.objects.get()
    assert (contact.participant, contact.recorded_by) == (clinic.participant, superuser)


def test_family_contact_without_email_or_phone_is_refused(superuser_client, clinic):
    response = superuser_client.post(
        reverse("admin:accounts_familycontact_add"), contact_post(clinic.participant, email="")
    )

    assert response.status_code == 200
    assert escape("A family contact needs an e-mail address or a phone number.") in response.content.decode()
    assert not FamilyContact.objects.exists()


def test_family_contact_of_a_therapist_is_refused(superuser_client, clinic):
    response = superuser_client.post(reverse("admin:accounts_familycontact_add"), contact_post(clinic.lead))

    assert response.status_code == 200
    assert "Family contacts belong to participants: choose a participant." in response.content.decode()
    assert not FamilyContact.objects.exists()


def test_family_contact_with_consent_in_one_step(superuser_client, superuser, clinic):
    data = contact_post(
        clinic.participant,
        **management("consents", total=1),
        **{
            "consents-0-program": str(clinic.program.pk),
            "consents-0-consented_by": str(clinic.participant.pk),
            "consents-0-consented_at_0": "2026-03-01",
            "consents-0-consented_at_1": "10:00:00",
        },
    )

    response = superuser_client.post(reverse("admin:accounts_familycontact_add"), data)

    assert response.status_code == 302
    consent = FamilyConsent.objects.get()
    assert (consent.contact.recorded_by, consent.recorded_by, consent.is_active) == (superuser, superuser, True)


def test_user_admin_search_finds_by_name(superuser_client, clinic):
    response = superuser_client.get(reverse("admin:accounts_user_changelist"), {"q": "Oscar Outsider"})

    assert [u.pk for u in response.context["cl"].result_list] == [clinic.outsider_participant.pk]


def test_clinic_admin_role_without_staff_flag_cannot_open_admin(client, db):
    client.force_login(make_user(Role.ADMIN))

    assert client.get(reverse("admin:accounts_user_changelist")).status_code == 302
