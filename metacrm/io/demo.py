"""``metacrm demo``: the example models copied into a directory, with SQLite databases full of
sample data, to look at and play with.

The data is deterministic (a seeded random generator): Russian companies and people, cities,
INNs with valid check digits, phone numbers valid for region RU, e-mails. Dates are placed
around the day the demo is built (open deals close in the future, paid ones were paid in the
past), so only the dates move from one day to the next. Staged records are placed in their
stages through the explicit import path (``create_many(..., import_stages=True)``) with the
fields that the stages on the way there require.

The demo is built in a temporary directory next to the target and moved in only when it is
complete: a failure leaves an existing demo as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import random
import shutil
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from ..errors import MetaCRMError

SEED = 20240901
SCHEMA_FILE = "metacrm.schema.json"
_SCHEMA_COMMENT = "# yaml-language-server: $schema="
_SQLITE_SIDECARS = ("-journal", "-wal", "-shm")

_PACKAGE = Path(__file__).resolve().parent.parent
_EXAMPLE_CANDIDATES = (
    _PACKAGE / "examples",  # installed wheel (force-included by pyproject.toml)
    _PACKAGE.parent / "examples",  # source checkout / editable install
)


class DemoExists(MetaCRMError):
    """The target directory holds something and ``force`` was not given."""


def examples_dir() -> Path:
    """The directory of the example models, in an installed wheel or in a source checkout."""
    for candidate in _EXAMPLE_CANDIDATES:
        if (candidate / "trade.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        "the example models (examples/*.yaml) are missing from this installation"
    )  # pragma: no cover


def example_files() -> list[Path]:
    return sorted(examples_dir().glob("*.yaml"))


@dataclass
class DemoDatabase:
    name: str  # the model's file stem: trade
    label: str | None  # the model's label: Торговая компания
    model: Path  # directory/trade.yaml
    path: Path  # directory/trade.db
    counts: dict[str, int]  # records per entity, in model order
    stages: dict[str, dict[str, int]] = field(default_factory=dict)  # entity -> stage -> records

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path.as_posix()}"


@dataclass
class DemoResult:
    directory: Path
    models: list[Path]  # every model copied, databases or not
    databases: dict[str, DemoDatabase]
    seconds: float

    @property
    def files(self) -> list[Path]:
        return [*self.models, self.directory / SCHEMA_FILE, *(d.path for d in self.databases.values())]


def build_demo(
    directory: str | os.PathLike = "demo", *, force: bool = False, today: dt.date | None = None
) -> DemoResult:
    """Copy the example models into ``directory`` and build ``trade.db`` and ``logistics.db``
    (SQLite) with sample data. Refuses (DemoExists) a directory that is not empty unless
    ``force``; with ``force`` only the demo's own files in it are replaced."""
    started = time.perf_counter()
    target = Path(directory)
    today = today or dt.date.today()
    sources = example_files()
    names = [s.name for s in sources]
    own = {*names, SCHEMA_FILE, *(f"{n}.db" for n in _BUILDERS)}
    _check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".metacrm-demo-", dir=target.parent))
    try:
        _copy_models(sources, staging)
        built: dict[str, tuple[str | None, dict, dict]] = {}
        for name, fill in _BUILDERS.items():
            if f"{name}.yaml" in names:
                built[name] = _build_database(staging / f"{name}.yaml", staging / f"{name}.db", fill, today)
        target.mkdir(parents=True, exist_ok=True)
        if force:
            for name in own:
                for suffix in ("", *_SQLITE_SIDECARS):
                    victim = target / f"{name}{suffix}"
                    if victim.is_file() or victim.is_symlink():
                        victim.unlink()
        for item in staging.iterdir():
            os.replace(item, target / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    databases = {
        name: DemoDatabase(name, label, target / f"{name}.yaml", target / f"{name}.db", counts, stages)
        for name, (label, counts, stages) in built.items()
    }
    return DemoResult(target, [target / n for n in names], databases, time.perf_counter() - started)


def _check_target(target: Path, force: bool) -> None:
    shown = target.as_posix().rstrip("/") + "/"
    if target.exists() and not target.is_dir():
        raise DemoExists(f"{target.as_posix()} exists and is not a directory: give another --dir")
    if target.is_dir() and any(target.iterdir()) and not force:
        raise DemoExists(
            f"{shown} already exists and is not empty: nothing was changed; "
            "run `metacrm demo --force` to rebuild the demo there, or give another --dir"
        )


def _copy_models(sources: list[Path], staging: Path) -> None:
    """The models, with the schema next to them and their yaml-language-server comment
    pointing at it (the examples point at ../schemas/)."""
    from ..model.schema import schema_path

    shutil.copyfile(schema_path(), staging / SCHEMA_FILE)
    for source in sources:
        lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
        lines = [f"{_SCHEMA_COMMENT}{SCHEMA_FILE}\n" if line.startswith(_SCHEMA_COMMENT) else line for line in lines]
        (staging / source.name).write_text("".join(lines), encoding="utf-8")


def _build_database(model_path: Path, db_path: Path, fill: Callable, today: dt.date):
    from ..runtime.crm import connect

    crm = connect(model_path, f"sqlite:///{db_path.as_posix()}")
    try:
        crm.migrate()
        fill(crm, random.Random(SEED), today)
        counts = {name: crm.count(name) for name in crm.model.entities}
        stages = {}
        for ent in crm.model.entities.values():
            if ent.has_stages:
                found = Counter(r["stage"] for r in crm.find(ent.name))
                order = [s for p in ent.pipelines.values() for s in p.stages]
                stages[ent.name] = {s: found[s] for s in dict.fromkeys(order) if found[s]}
        return crm.model.label, counts, stages
    finally:
        crm.close()


# --------------------------------------------------------------------------- stage paths


def stage_path(pipeline, stage: str) -> list[str]:
    """The shortest way through the pipeline's transitions (reopens aside) from its initial
    stage to ``stage``, both included."""
    previous: dict[str, str | None] = {pipeline.initial: None}
    queue = deque([pipeline.initial])
    while queue:
        here = queue.popleft()
        if here == stage:
            break
        for there, transition in pipeline.adjacency.get(here, {}).items():
            if there not in previous and not transition.reopen:
                previous[there] = here
                queue.append(there)
    if stage not in previous:
        raise ValueError(f"stage {stage!r} cannot be reached in pipeline {pipeline.name!r}")
    path: list[str] = []
    node: str | None = stage
    while node is not None:
        path.append(node)
        node = previous[node]
    return path[::-1]


def required_on_the_way(pipeline, stage: str) -> set[str]:
    """The fields and links every stage on the way to ``stage`` requires."""
    return {name for s in stage_path(pipeline, stage) for name in pipeline.stages[s].requires}


# --------------------------------------------------------------------------- Russian sample data

CITIES = {  # city: (weight, landline area code, INN region code)
    "Москва": (8, "495", "77"),
    "Санкт-Петербург": (5, "812", "78"),
    "Казань": (3, "843", "16"),
    "Новосибирск": (3, "383", "54"),
    "Екатеринбург": (3, "343", "66"),
    "Нижний Новгород": (2, "831", "52"),
    "Самара": (2, "846", "63"),
    "Краснодар": (2, "861", "23"),
}
MOBILE = ("903", "905", "915", "916", "917", "926", "950", "985")
SURNAMES = (
    "Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов", "Михайлов", "Новиков",
    "Морозов", "Волков", "Алексеев", "Лебедев", "Семёнов", "Егоров", "Павлов", "Козлов", "Степанов",
    "Николаев", "Орлов", "Андреев", "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв", "Борисов",
)  # fmt: skip
MALE = ("Александр", "Дмитрий", "Максим", "Сергей", "Андрей", "Алексей", "Артём", "Илья", "Кирилл", "Михаил",
        "Никита", "Иван", "Роман", "Егор", "Павел", "Олег", "Виктор")  # fmt: skip
FEMALE = ("Анна", "Мария", "Елена", "Ольга", "Наталья", "Татьяна", "Екатерина", "Ирина", "Светлана", "Юлия",
          "Дарья", "Ксения", "Марина")  # fmt: skip
PATRONYMICS = ("Александров", "Дмитриев", "Сергеев", "Андреев", "Алексеев", "Викторов", "Игорев", "Николаев",
               "Петров", "Владимиров", "Юрьев", "Михайлов")  # fmt: skip
COMPANIES = (
    "Вектор", "Гранит", "Меридиан", "Альтаир", "Прогресс", "Стройресурс", "ТехноСнаб", "Волга-Трейд",
    "Уралпромкомплект", "Сибирский лес", "Балтийская торговая компания", "Невский дом", "Приволжье-Агро",
    "Энергомонтаж", "Спектр", "Орион", "Зенит-Строй", "Горизонт", "Ладога", "Кристалл", "Авангард",
    "Эталон", "Магистраль", "Ресурс-М", "Стандарт Плюс", "Арсенал", "Континент", "Восток-Снаб", "Тайга",
    "Атлант", "Сфера", "Паритет", "Байкал", "Енисей", "Кедр", "Сапфир", "Янтарь", "Импульс", "Интеграл",
    "Камская металлобаза", "Северная звезда", "Дом и сад", "Профиль-Центр", "СтальМаркет", "ЭлектроТорг",
    "Теплоком", "АкваСервис", "Оптима", "Пересвет", "Гефест",
)  # fmt: skip
_TRANSLIT = dict(
    zip(
        "абвгдеёжзийклмнопрстуфхцчшщъыьэюя",
        "a b v g d e e zh z i y k l m n o p r s t u f kh ts ch sh shch - y - e yu ya".split(),
        strict=True,
    )
)


def translit(text: str) -> str:
    """An ASCII slug of Russian text: «Волга-Трейд» -> volga-treyd."""
    out = []
    for ch in text.lower():
        if ch in _TRANSLIT:
            out.append("" if _TRANSLIT[ch] == "-" else _TRANSLIT[ch])
        elif ch.isascii() and ch.isalnum():
            out.append(ch)
        else:
            out.append("-")
    return "-".join(part for part in "".join(out).split("-") if part)


def inn(rng: random.Random, region: str, *, person: bool = False) -> str:
    """An INN with valid check digits: 10 digits for an organisation, 12 for a person."""
    if not person:
        digits = [int(c) for c in region] + [rng.randrange(10) for _ in range(7)]
        digits.append(sum(d * k for d, k in zip(digits, (2, 4, 10, 3, 5, 9, 4, 6, 8), strict=True)) % 11 % 10)
    else:
        digits = [int(c) for c in region] + [rng.randrange(10) for _ in range(8)]
        digits.append(sum(d * k for d, k in zip(digits, (7, 2, 4, 10, 3, 5, 9, 4, 6, 8), strict=True)) % 11 % 10)
        digits.append(sum(d * k for d, k in zip(digits, (3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8), strict=True)) % 11 % 10)
    return "".join(map(str, digits))


class Sample:
    """Unique Russian names, INNs and e-mails from one seeded generator."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.companies = list(COMPANIES)
        rng.shuffle(self.companies)
        self.used: set[str] = set()

    def unique(self, make: Callable[[], str]) -> str:
        for _ in range(1000):
            value = make()
            if value not in self.used:
                self.used.add(value)
                return value
        raise RuntimeError("the sample data ran out of unique values")  # pragma: no cover

    def city(self) -> str:
        return self.rng.choices(list(CITIES), weights=[w for w, _, _ in CITIES.values()])[0]

    def person(self) -> tuple[str, str, str, bool]:
        """(surname, first name, patronymic, female)."""
        female = self.rng.random() < 0.45
        surname = self.rng.choice(SURNAMES) + ("а" if female else "")
        first = self.rng.choice(FEMALE if female else MALE)
        patronymic = self.rng.choice(PATRONYMICS) + ("на" if female else "ич")
        return surname, first, patronymic, female

    def full_name(self) -> str:
        surname, first, patronymic, _ = self.person()
        return f"{surname} {first} {patronymic}"

    def company(self, *, forms=("ООО", "ООО", "ООО", "АО")) -> tuple[str, str]:
        """(name, ascii slug): ООО «Вектор», vektor."""
        root = self.companies.pop()
        return f"{self.rng.choice(forms)} «{root}»", translit(root)

    def phone(self, city: str | None = None, *, mobile: bool | None = None) -> str:
        if mobile is None:
            mobile = city is None or self.rng.random() < 0.4
        code = self.rng.choice(MOBILE) if mobile else CITIES[city][1]
        n = self.rng.randrange(2_000_000, 9_999_999)
        return f"+7 ({code}) {n // 10000:03d}-{n // 100 % 100:02d}-{n % 100:02d}"

    def inn(self, city: str, *, person: bool = False) -> str:
        return self.unique(lambda: inn(self.rng, CITIES[city][2], person=person))

    def email(self, local: str, domain: str) -> str:
        first = f"{local}@{domain}"
        return self.unique(lambda: first if first not in self.used else f"{local}{self.rng.randrange(2, 99)}@{domain}")

    def moment(self, day: dt.date) -> dt.datetime:
        """A working-hours moment of that day, Moscow time."""
        msk = dt.timezone(dt.timedelta(hours=3), "MSK")
        return dt.datetime.combine(day, dt.time(self.rng.randrange(9, 19), self.rng.choice((0, 15, 30, 45))), msk)

    def money(self, low: int, high: int, step: int = 100) -> Decimal:
        return Decimal(self.rng.randrange(low // step, high // step + 1) * step).quantize(Decimal("0.01"))


def _spread(counts: dict[str, int], rng: random.Random) -> list[str]:
    stages = [stage for stage, n in counts.items() for _ in range(n)]
    rng.shuffle(stages)
    return stages


def _add_users(crm, users: dict[str, str]) -> None:
    """Users with roles, where this version of metacrm keeps users (crm.add_user)."""
    add_user = getattr(crm, "add_user", None)
    if add_user is None:
        return
    for login, role in users.items():
        add_user(login, roles=[role])


# --------------------------------------------------------------------------- trade.yaml

MANAGERS = ("a.ivanova", "d.petrov", "e.smirnova")
# name, sku, unit, price, weight per unit (kg), in the title «Поставка …», specs
PRODUCTS = (
    ("Кабель ВВГнг-LS 3×2,5", "CAB-VVG-3X25", "m", "98.50", "0.13", "кабеля ВВГнг-LS", {"сечение": "3×2,5 мм²", "ГОСТ": "31996-2012"}),
    ("Кабель силовой АВБбШв 4×95", "CAB-AVB-4X95", "m", "1450.00", "2.9", "силового кабеля", {"сечение": "4×95 мм²", "броня": True}),
    ("Автоматический выключатель 16 А", "BRK-C16", "pcs", "420.00", "0.12", "автоматических выключателей", {"ток": "16 А", "характеристика": "C"}),
    ("Светильник светодиодный 36 Вт", "LED-PANEL-36", "pcs", "1890.00", "2.1", "светодиодных светильников", {"мощность": "36 Вт", "IP": 40}),
    ("Труба стальная ВГП 32×3,2", "PIPE-VGP-32", "m", "410.00", "3.09", "стальной трубы", {"ГОСТ": "3262-75"}),
    ("Арматура А500С 12 мм", "REBAR-A500-12", "kg", "72.40", "1", "арматуры", {"класс": "А500С", "диаметр": "12 мм"}),
    ("Цемент ПЦ 500 Д0, мешок 50 кг", "CEM-PC500-50", "pcs", "520.00", "50", "цемента", {"марка": "М500"}),
    ("Профнастил С21 оцинкованный", "PROF-C21-ZN", "m", "690.00", "4.2", "профнастила", {"толщина": "0,5 мм"}),
    ("Краска фасадная акриловая, 10 л", "PAINT-FAS-10", "pcs", "3200.00", "14", "фасадной краски", {"объём": "10 л"}),
    ("Утеплитель минераловатный 100 мм", "INS-MW-100", "pallet", "18500.00", "240", "утеплителя", {"плотность": "35 кг/м³"}),
    ("Поддон деревянный 1200×800", "PAL-EUR-1208", "pcs", "450.00", "25", "поддонов", {"тип": "EUR"}),
    ("Стретч-плёнка 500 мм", "FILM-STR-500", "pcs", "890.00", "2.4", "стретч-плёнки", {"толщина": "17 мкм"}),
    ("Насос циркуляционный 25-60", "PUMP-CIRC-2560", "pcs", "8900.00", "2.6", "циркуляционных насосов", {"напор": "6 м"}),
    ("Радиатор биметаллический, 10 секций", "RAD-BM-10", "pcs", "7400.00", "16", "радиаторов отопления", {"секций": 10}),
    ("Керамогранит 600×600 мм", "TILE-KG-6060", "pallet", "42000.00", "900", "керамогранита", {"м² на паллете": 46}),
    ("Смеситель для кухни", "MIX-KITCH-01", "pcs", "3600.00", "1.3", "смесителей", {"материал": "латунь"}),
    ("Перфоратор SDS-plus 800 Вт", "TOOL-PERF-800", "pcs", "9800.00", "2.8", "перфораторов", {"мощность": "800 Вт"}),
    ("Шуруповёрт аккумуляторный 18 В", "TOOL-DRILL-18", "pcs", "7900.00", "1.6", "шуруповёртов", {"напряжение": "18 В"}),
    ("Саморез кровельный 4,8×35, 250 шт.", "SCR-ROOF-4835", "pcs", "950.00", "1.9", "кровельных саморезов", {"покрытие": "цинк"}),
    ("Гипсокартон ГКЛ 12,5 мм", "GKL-125", "pallet", "23000.00", "1450", "гипсокартона", {"листов": 50}),
)  # fmt: skip
QUANTITY = {"pcs": (10, 400), "m": (100, 3000), "kg": (1000, 20000), "pallet": (2, 24)}
DEAL_ORDER = ("new", "qualified", "proposal", "contract", "invoice", "won")  # the way to the won stage
DEAL_STAGES = {"new": 8, "qualified": 9, "proposal": 10, "contract": 8, "invoice": 7, "won": 10, "lost": 8}
LOST_REASONS = (
    "Выбрали поставщика с ценой ниже на 7%",
    "Проект заморожен заказчиком до следующего квартала",
    "Не устроили сроки поставки",
    "Бюджет не согласован",
    "Клиент перестал выходить на связь",
    "Требовалась отсрочка платежа 90 дней",
)
STAGE_TASKS = {
    "new": "Связаться с клиентом и уточнить потребность",
    "qualified": "Подготовить коммерческое предложение",
    "proposal": "Получить обратную связь по КП",
    "contract": "Согласовать договор с юристом",
    "invoice": "Проконтролировать оплату счёта",
}
CLIENT_TASKS = (
    "Актуализировать реквизиты",
    "Запланировать встречу на объекте",
    "Отправить каталог новинок",
    "Поздравить с юбилеем компании",
    "Провести сверку взаиморасчётов",
)


def fill_trade(crm, rng: random.Random, today: dt.date) -> None:
    s = Sample(rng)
    _add_users(crm, {**dict.fromkeys(MANAGERS, "manager"), "o.kuznetsova": "lawyer", "s.volkov": "director"})

    suppliers = crm.create_many(
        "supplier",
        [
            {
                "name": name,
                "inn": s.inn(city := s.city()),
                "email": s.email(rng.choice(("sales", "opt", "info")), f"{slug}.ru"),
                "phone": s.phone(city, mobile=False),
                "country": "Россия",
                "rating": rng.choice((3, 4, 4, 5, 5)),
                "payment_delay_days": rng.choice((0, 0, 14, 30, 45)),
            }
            for name, slug in (s.company(forms=("ООО", "АО", "ЗАО")) for _ in range(10))
        ],
    )
    carriers = crm.create_many(
        "carrier",
        [
            {"name": name, "transport_modes": modes, "phone": s.phone(None, mobile=True),
             "email": s.email("dispatch", f"{translit(slug)}.ru"),
             "tracking_url": f"https://{translit(slug)}.ru/tracking", "insured": insured}
            for name, slug, modes, insured in (
                ("ООО «ТрансЛогистик»", "translogistik", ["truck"], True),
                ("АО «ЖелДорЭкспедиция»", "zheldorexp", ["rail", "truck"], True),
                ("ООО «Морской путь»", "morskoy-put", ["sea"], True),
                ("ООО «Авиа Карго Сибирь»", "avia-cargo-sib", ["air", "truck"], True),
                ("ИП Захаров Олег Викторович", "zakharov-trans", ["truck"], False),
            )
        ],
    )  # fmt: skip
    products = crm.create_many(
        "product",
        [
            {
                "name": name,
                "sku": sku,
                "unit": unit,
                "price": Decimal(price),
                "vat_rate": 20,
                "weight_kg": Decimal(weight),
                "specs": specs,
                "supplier": suppliers[i % len(suppliers)]["id"],
            }
            for i, (name, sku, unit, price, weight, _, specs) in enumerate(PRODUCTS)
        ],
    )
    phrase = {p["id"]: spec[5] for p, spec in zip(products, PRODUCTS, strict=True)}

    rows = []
    for i in range(30):
        city = s.city()
        sole = i % 8 == 5  # a few sole traders (ИП), with a 12-digit INN
        if sole:
            surname, first, patronymic, _ = s.person()
            name, local, domain = (
                f"ИП {surname} {first} {patronymic}",
                translit(f"{surname}.{first[0]}{patronymic[0]}"),
                "mail.ru",
            )
        else:
            name, slug = s.company()
            local, domain = rng.choice(("info", "zakupki", "office", "snab")), f"{slug}.ru"
        rows.append(
            {
                "name": name,
                "inn": s.inn(city, person=sole),
                "email": s.email(local.replace("-", "."), domain),
                "phone": s.phone(city),
                "website": None if sole else f"https://{domain}",
                "city": city,
                "source": rng.choices(("site", "call", "referral", "exhibition"), weights=(5, 3, 3, 1))[0],
                "segment": "retail" if sole else rng.choice(("retail", "wholesale", "wholesale", "distributor")),
                "vip": i in (0, 3, 11, 19),
                "notes": rng.choice((None, None, "Предпочитает связь по e-mail", "Оплата только по факту поставки",
                                     "Доставка на объект, разгрузка манипулятором")),
                "owner": MANAGERS[i % len(MANAGERS)],
            }
        )  # fmt: skip
    clients = crm.create_many("client", rows)

    pipeline = crm.model.entity("deal").default_pipeline
    order = DEAL_ORDER
    weights = [4 if c["vip"] else 1 for c in clients]
    deals, deal_stages = [], _spread(DEAL_STAGES, rng)
    for i, stage in enumerate(deal_stages):
        client = clients[0] if i < 3 else rng.choices(clients, weights=weights)[0]  # client 1 is a regular
        reached = rng.choice(order[:-1]) if pipeline.stages[stage].kind == "lost" else stage
        k = order.index(reached)
        picked = rng.sample(products, rng.choice((1, 1, 2, 3)))
        deal = {"client": client["id"], "owner": client["owner"], "stage": stage, "currency": "rub", "discount": 0}
        deal["title"] = f"Поставка {phrase[picked[0]['id']]}" + (
            f" и {phrase[picked[1]['id']]}" if len(picked) > 1 else ""
        )
        if k >= 2 or (k == 1 and rng.random() < 0.5):
            deal["products"] = [p["id"] for p in picked]
        if deal.get("products") or k >= 1 or rng.random() < 0.3:
            discount = rng.choice((0, 0, 3, 5, 7, 10))
            gross = sum(p["price"] * rng.randint(*QUANTITY[p["unit"]]) for p in picked)
            deal["amount"] = (gross * (100 - discount) / 100).quantize(Decimal("1")).quantize(Decimal("0.01"))
            deal["discount"] = discount
            deal["margin"] = rng.choice((8, 12, 15, 18, 22, 25, 30))
        if k >= order.index("contract") or (deal.get("products") and rng.random() < 0.4):
            deal["supplier"] = next(p["supplier"] for p in picked)
        if k >= order.index("contract") and rng.random() < 0.7:
            deal["carriers"] = sorted({c["id"] for c in rng.sample(carriers, rng.choice((1, 1, 2)))})
        if stage == "won":
            paid = today - dt.timedelta(days=rng.randrange(3, 180))
            deal["paid_at"] = s.moment(paid)
            deal["expected_close"] = paid - dt.timedelta(days=rng.randrange(0, 10))
        elif pipeline.stages[stage].kind == "lost":
            deal["lost_reason"] = rng.choice(LOST_REASONS)
            deal["expected_close"] = today - dt.timedelta(days=rng.randrange(5, 120))
        else:
            deal["expected_close"] = today + dt.timedelta(days=rng.randrange(7, 120))
        deals.append(deal)
    deals = crm.create_many("deal", deals, import_stages=True)

    documents, numbers = [], Counter()

    def document(deal, kind, status, prefix):
        numbers[kind] += 1
        number = f"{prefix}-{today.year}/{numbers[kind]:03d}"
        signed = status == "signed"
        documents.append(
            {
                "number": number,
                "kind": kind,
                "status": status,
                "amount": deal["amount"],
                "signed_on": today - dt.timedelta(days=rng.randrange(1, 60)) if signed else None,
                "file_url": f"https://docs.example.ru/trade/{translit(number).replace('/', '-')}.pdf",
                "deal": deal["id"],
                "client": deal["client"],
                "owner": deal["owner"],
            }
        )

    for deal in deals:
        k = order.index(deal["stage"]) if deal["stage"] in order else -1
        if deal["stage"] == "proposal":
            document(deal, "specification", rng.choice(("draft", "review")), "СП")
        if k >= order.index("contract"):
            document(deal, "contract", "review" if deal["stage"] == "contract" else "signed", "Д")
        if k >= order.index("invoice"):
            document(deal, "invoice", "signed", "СЧ")
        if deal["stage"] == "won":
            document(deal, "act", "signed", "А")
    crm.create_many("document", documents)

    tasks = []
    for deal in deals:
        if deal["stage"] in STAGE_TASKS:
            due = today + dt.timedelta(days=rng.randrange(-3, 15))
            tasks.append(
                {
                    "title": STAGE_TASKS[deal["stage"]],
                    "description": f"По сделке «{deal['title']}»",
                    "due": s.moment(due),
                    "priority": "high"
                    if (deal["amount"] or 0) > 1_000_000
                    else rng.choice(("low", "normal", "normal")),
                    "done": False,
                    "subject": {"entity": "deal", "id": deal["id"]},
                    "owner": deal["owner"],
                }
            )
        elif deal["stage"] == "won" and rng.random() < 0.5:
            tasks.append(
                {
                    "title": "Передать закрывающие документы",
                    "due": deal["paid_at"] + dt.timedelta(days=3),
                    "priority": "normal",
                    "done": True,
                    "subject": {"entity": "deal", "id": deal["id"]},
                    "owner": deal["owner"],
                }
            )
    for client in rng.sample(clients, 8):
        tasks.append(
            {
                "title": rng.choice(CLIENT_TASKS),
                "due": s.moment(today + dt.timedelta(days=rng.randrange(-5, 30))),
                "priority": "high" if client["vip"] else "normal",
                "done": False,
                "subject": {"entity": "client", "id": client["id"]},
                "owner": client["owner"],
            }
        )
    crm.create_many("task", tasks)


# --------------------------------------------------------------------------- logistics.yaml

FORWARDERS = ("m.orlova", "i.nikitin")
LOCATIONS = (  # name, UN/LOCODE, kind, country
    ("Санкт-Петербург, Большой порт", "RULED", "seaport", "Россия"),
    ("Новороссийск, морской порт", "RUNVS", "seaport", "Россия"),
    ("Владивосток, морской порт", "RUVVO", "seaport", "Россия"),
    ("Москва, аэропорт Шереметьево", "RUMOW", "airport", "Россия"),
    ("Новосибирск, аэропорт Толмачёво", "RUOVB", "airport", "Россия"),
    ("Казань, склад временного хранения", "RUKZN", "warehouse", "Россия"),
    ("Шанхай, порт Яншань", "CNSHA", "seaport", "Китай"),
    ("Нинбо, порт Бэйлунь", "CNNGB", "seaport", "Китай"),
    ("Стамбул, порт Амбарлы", "TRIST", "seaport", "Турция"),
    ("Гуанчжоу, аэропорт Байюнь", "CNCAN", "airport", "Китай"),
    ("Дубай, аэропорт Аль-Мактум", "AEDXB", "airport", "ОАЭ"),
)
CARGO = (
    ("Запчасти для станков ЧПУ", ["8466930000"]),
    ("Светодиодные панели и драйверы", ["9405420000", "8504409000"]),
    ("Текстиль: хлопковая ткань в рулонах", ["5208520000"]),
    ("Керамическая плитка на паллетах", ["6907220000"]),
    ("Насосное оборудование", ["8413702100"]),
    ("Смартфоны и аксессуары", ["8517130000", "8518300000"]),
    ("Автомобильные шины", ["4011100003"]),
    ("Медицинские расходные материалы", ["9018390000"]),
    ("Электродвигатели асинхронные", ["8501520000"]),
    ("Сухофрукты и орехи", ["0813500000", "0802320000"]),
)
SHIPMENT_STAGES = {
    "sea": {"request": 2, "quoted": 2, "booked": 2, "container_loaded": 2, "in_transit": 3, "at_port": 1,
            "customs": 2, "delivered": 3, "cancelled": 1},
    "air": {"request": 1, "quoted": 2, "booked": 1, "awb_issued": 1, "departed": 1, "arrived": 1, "customs": 1,
            "delivered": 3, "cancelled": 1},
}  # fmt: skip
SERVICE_TITLES = {
    "delivery": "Доставка до склада клиента",
    "customs": "Таможенное оформление",
    "certificates": "Получить сертификаты соответствия",
    "insurance": "Оформить страхование груза",
}


def fill_logistics(crm, rng: random.Random, today: dt.date) -> None:
    s = Sample(rng)
    _add_users(
        crm, {**dict.fromkeys(FORWARDERS, "forwarder"), "t.egorova": "customs_broker", "v.lebedev": "head_of_logistics"}
    )
    clients = []
    for i in range(12):
        name, slug = s.company()
        city = s.city()
        clients.append(
            {
                "name": name,
                "inn": s.inn(city),
                "email": s.email(rng.choice(("logistics", "ved", "import")), f"{slug}.ru"),
                "phone": s.phone(city),
                "contact_person": s.full_name(),
                "credit_limit": s.money(500_000, 5_000_000, 50_000),
                "owner": FORWARDERS[i % len(FORWARDERS)],
            }
        )
    clients = crm.create_many("client", clients)
    carriers = crm.create_many(
        "carrier",
        [
            {
                "name": "Балтик Шиппинг Лайн",
                "kind": "shipping_line",
                "code": "BSLU",
                "website": "https://bslu.example.com",
            },
            {
                "name": "Транссибирская морская линия",
                "kind": "shipping_line",
                "code": "TSML",
                "email": "booking@tsml.ru",
            },
            {"name": "Понтус Контейнер Лайн", "kind": "shipping_line", "code": "PCLU"},
            {"name": "Авиакомпания «Сибирь Карго»", "kind": "airline", "code": "SK", "email": "cargo@sibcargo.ru"},
            {"name": "Волга Эйр Карго", "kind": "airline", "code": "VA"},
            {"name": "ООО «ТрансАвто»", "kind": "trucking", "code": "TRA", "email": "dispatch@transavto.ru"},
        ],
    )
    locations = crm.create_many(
        "location", [{"name": n, "code": c, "kind": k, "country": country} for n, c, k, country in LOCATIONS]
    )
    by_kind = {
        (kind, russian): [
            loc["id"] for loc in locations if loc["kind"] == kind and (loc["country"] == "Россия") == russian
        ]
        for kind in ("seaport", "airport")
        for russian in (True, False)
    }
    lines = {kind: [c for c in carriers if c["kind"] == kind] for kind in ("shipping_line", "airline")}
    entity = crm.model.entity("shipment")
    shipments, serial = [], Counter()
    for mode, counts in SHIPMENT_STAGES.items():
        pipeline = entity.pipelines[mode]
        main = stage_path(pipeline, "delivered")
        for stage in _spread(counts, rng):
            reached = rng.choice(main[:3]) if pipeline.stages[stage].kind == "lost" else stage
            path = stage_path(pipeline, reached)
            if reached == "delivered" and rng.random() < 0.6:
                path = stage_path(pipeline, "customs") + ["delivered"]
            needed = {n for st in (*path, stage) for n in pipeline.stages[st].requires}
            progress = min(1.0, (len(path) - 1) / (len(main) - 1))  # how far along: sets the dates
            serial[mode] += 1
            cargo, hs_codes = rng.choice(CARGO)
            sea = mode == "sea"
            port = "seaport" if sea else "airport"
            services = ["delivery"] + [x for x in ("customs", "certificates", "insurance") if rng.random() < 0.5]
            if sea:
                etd = today + dt.timedelta(days=int(25 - progress * 75) + rng.randrange(-4, 5))
            else:
                etd = today + dt.timedelta(days=int(8 - progress * 18) + rng.randrange(-2, 3))
            line = rng.choice(lines["shipping_line" if sea else "airline"])
            record = {
                "pipeline": mode,
                "stage": stage,
                "reference": f"{mode.upper()}-{today.year}-{serial[mode]:05d}",
                "cargo": cargo,
                "incoterms": rng.choice(("fob", "fob", "cif", "exw", "fca") if sea else ("fca", "exw", "dap")),
                "services": services,
                "pieces": rng.randrange(4, 40) if sea else rng.randrange(1, 12),
                "weight_kg": Decimal(rng.randrange(8_000, 24_000) if sea else rng.randrange(50, 900)),
                "volume_m3": Decimal(rng.randrange(20, 67) if sea else rng.randrange(1, 8)),
                "hs_codes": hs_codes,
                "cargo_value": s.money(800_000, 12_000_000, 10_000),
                "insurance_rate": Decimal("0.15") if "insurance" in services else None,
                "etd": etd,
                "eta": etd + dt.timedelta(days=rng.randrange(30, 45) if sea else rng.randrange(2, 6)),
                "origin": rng.choice(by_kind[(port, False)]),
                "destination": rng.choice(by_kind[(port, True)]),
                "client": rng.choice(clients)["id"],
            }
            record["owner"] = next(c["owner"] for c in clients if c["id"] == record["client"])
            if "freight_rate" in needed:
                record["freight_rate"] = s.money(180_000, 650_000) if sea else s.money(40_000, 300_000)
            if "carrier" in needed:
                record["carrier"] = line["id"]
            if "container_number" in needed:
                record["container_number"] = f"{line['code'][:3]}U{rng.randrange(10**6, 10**7):07d}"
            if "bill_of_lading" in needed:
                record["bill_of_lading"] = f"{line['code']}{today.year % 100}{rng.randrange(10**5, 10**6)}"
            if "awb_number" in needed:
                record["awb_number"] = f"{rng.choice(('421', '555', '580'))}-{rng.randrange(10**7, 10**8):08d}"
            if "customs_declaration" in needed:
                record["customs_declaration"] = f"10702070/{etd:%d%m%y}/{rng.randrange(10**6, 10**7):07d}"
            if "delivered_at" in needed:
                record["delivered_at"] = s.moment(min(record["eta"], today - dt.timedelta(days=1)))
            if "cancel_reason" in needed:
                record["cancel_reason"] = rng.choice(("Клиент выбрал другого экспедитора", "Поставщик сорвал отгрузку"))
            shipments.append(record)
    shipments = crm.create_many("shipment", shipments, import_stages=True)
    tasks = []
    for shipment in shipments:
        if shipment["stage"] == "cancelled":
            continue
        done = shipment["stage"] == "delivered"
        for service in shipment["services"]:
            tasks.append(
                {
                    "title": SERVICE_TITLES[service],
                    "service": service,
                    "due": shipment["eta"] + dt.timedelta(days=2 if service == "delivery" else 0),
                    "done": done or (service != "delivery" and rng.random() < 0.3),
                    "cost": s.money(5_000, 60_000, 500),
                    "shipment": shipment["id"],
                    "owner": shipment["owner"],
                }
            )
    crm.create_many("service_task", tasks)


_BUILDERS: dict[str, Callable] = {"trade": fill_trade, "logistics": fill_logistics}
