"""Files on a card in Chromium: a manager uploads a contract into its field and a photo as an
attachment, downloads the contract, sees the image inline, removes the photo, and sees a refused
file's message on the card; on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from test_files import migrated, png

from tests.test_web_browser import Server, chromium, expect, sign_in  # noqa: F401 - fixtures
from tests.test_web_pages import PASSWORD, create_app, set_password


@pytest.fixture
def files_site(db_url, tmp_path):
    crm = migrated(db_url, tmp_path)
    set_password(crm, "anna", PASSWORD)
    server = Server(create_app(crm))
    yield crm, server.url
    server.stop()
    crm.close()


def test_files_on_a_card(files_site, chromium, tmp_path):  # noqa: F811
    crm, url = files_site
    deal = crm.as_user("anna").create("deal", {"title": "Поставка"})["id"]
    (tmp_path / "договор.pdf").write_bytes(b"%PDF-1.4 contract")
    (tmp_path / "photo.png").write_bytes(png(4, 4))
    (tmp_path / "run.exe").write_bytes(b"MZ")
    context = chromium.new_context(accept_downloads=True)
    page = context.new_page()
    sign_in(page, url, "anna")

    page.goto(url + f"/deal/{deal}")
    page.set_input_files("#upload-file", str(tmp_path / "договор.pdf"))
    page.select_option("#upload-field", "contract")
    page.click("#upload button[type=submit]")
    expect(page).to_have_url(url + f"/deal/{deal}")
    expect(page.locator('dd[data-field="contract"] a')).to_have_text("договор.pdf")

    page.set_input_files("#upload-file", str(tmp_path / "photo.png"))
    page.select_option("#upload-field", "")
    page.click("#upload button[type=submit]")
    expect(page.locator("#files tbody tr")).to_have_count(2)
    contract, photo = crm.files("deal", deal)

    with page.expect_download() as info:
        page.click(f'#files tr[data-file="{contract["id"]}"] a')
    download = info.value
    assert download.suggested_filename == "договор.pdf"
    assert open(download.path(), "rb").read() == b"%PDF-1.4 contract"

    shown = context.new_page()
    answer = shown.goto(url + f"/deal/{deal}/files/{photo['id']}")
    assert answer.headers["content-type"] == "image/png" and answer.headers["content-disposition"].startswith("inline")
    shown.close()

    page.click(f'#files tr[data-file="{photo["id"]}"] button[type=submit]')
    expect(page.locator("#files tbody tr")).to_have_count(1)
    assert [f["id"] for f in crm.files("deal", deal)] == [contract["id"]]

    page.set_input_files("#upload-file", str(tmp_path / "run.exe"))
    page.select_option("#upload-field", "contract")
    page.click("#upload button[type=submit]")
    expect(page.locator("body")).to_contain_text("deal.contract: 'run.exe'")
    assert len(crm.files("deal", deal)) == 1
    context.close()
