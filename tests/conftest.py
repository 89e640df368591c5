import pytest

from tests.factories import Clinic, make_clinic


@pytest.fixture
def clinic(db) -> Clinic:
    return make_clinic()
