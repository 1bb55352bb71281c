"""The batch job's query file: every malformed line is a clear error naming it, before any search."""
import json

import pytest

from cluster.batch import read_queries
from cluster.rest import parse_box
from shards.errors import InvalidInput


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_csv_and_jsonl_queries_resolve_images_beside_the_file_and_keep_extra_columns(tmp_path):
    rows = read_queries(write(tmp_path, "q.csv", 'image,category,box,ref\na.jpg,Tshirts,"1,2,3,4",x7\n/abs/b.jpg,,,\n'))
    assert rows[0] == {"image": str(tmp_path / "a.jpg"), "category": "Tshirts", "box": "1,2,3,4", "ref": "x7"}
    assert rows[1]["image"] == "/abs/b.jpg" and rows[1]["category"] == ""
    lines = [{"image": "a.jpg", "box": [1, 2, 3, 4]}, {"image": "b.jpg", "category": None}]
    rows = read_queries(write(tmp_path, "q.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n"))
    assert [r["image"] for r in rows] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert parse_box(rows[0]["box"]) == (1.0, 2.0, 3.0, 4.0)


def test_a_photo_named_by_url_is_kept_as_it_is_and_only_http_or_https(tmp_path):
    rows = read_queries(write(tmp_path, "q.csv", "image\nhttps://cdn.example.com/a.jpg?w=800\nhttp://h/b.jpg\n"))
    assert [r["image"] for r in rows] == ["https://cdn.example.com/a.jpg?w=800", "http://h/b.jpg"]
    with pytest.raises(InvalidInput, match="line 3: a photo's URL is http:// or https://"):
        read_queries(write(tmp_path, "q.csv", "image\nhttp://h/b.jpg\ns3://bucket/c.jpg\n"))


def test_columns_of_the_callers_own_are_kept_however_they_are_named(tmp_path):
    text = "image,image_id,sku,boxes_ordered,title\na.jpg,i1,s1,3,Red shirt\n"
    [row] = read_queries(write(tmp_path, "q.csv", text))
    assert row == {"image": str(tmp_path / "a.jpg"), "image_id": "i1", "sku": "s1", "boxes_ordered": "3",
                   "title": "Red shirt"}


def test_a_spreadsheet_csv_with_a_bom_and_crlf_reads_as_any_other(tmp_path):
    p = tmp_path / "q.csv"
    p.write_bytes("\ufeffimage,category\r\na.jpg,Tshirts\r\n".encode("utf-8"))
    assert read_queries(str(p)) == [{"image": str(tmp_path / "a.jpg"), "category": "Tshirts"}]
    p = tmp_path / "q.jsonl"
    p.write_bytes('\ufeff{"image": "a.jpg"}\r\n'.encode("utf-8"))
    assert read_queries(str(p)) == [{"image": str(tmp_path / "a.jpg")}]


@pytest.mark.parametrize("name, text, says", [
    ("q.jsonl", '{"image": "a.jpg"}\n{bad json\n', "line 2: not JSON"),
    ("q.jsonl", '["a.jpg"]\n', "line 1: a query is an object"),
    ("q.jsonl", '{"image": 5}\n', "line 1: every query needs an 'image' path"),
    ("q.jsonl", '{"image": "a.jpg", "category": 3}\n', "line 1: category is a name"),
    ("q.csv", "image,box\na.jpg,\nb.jpg,1,2,3,4\n", 'line 3: more fields than the header has; quote a box'),
    ("q.csv", "photo\na.jpg\n", "line 2: every query needs an 'image' path"),
    ("q.csv", "image\n", "has no queries"),
    # a misspelt option would be echoed back as the caller's own column, and the query run without it
    ("q.csv", "image,catgory\na.jpg,Shirts\n", "column 'catgory' is not a query option; did you mean 'category'?"),
    ("q.jsonl", '{"image": "a.jpg", "bbox": "1,2,3,4"}\n', "column 'bbox' is not a query option; did you mean 'box'?"),
    ("q.csv", "image,filter\na.jpg,gender=Men\n", "column 'filter' is not a query option; did you mean 'filters'?"),
    ("q.jsonl", '{"image": "a.jpg", "filters": 3}\n', "line 1: filters are 'field=value' tokens"),
])
def test_a_malformed_query_file_is_a_clear_error_naming_the_line(tmp_path, name, text, says):
    path = write(tmp_path, name, text)
    with pytest.raises(InvalidInput, match=says.replace("(", r"\(")):
        read_queries(path)


def test_an_unreadable_query_file_is_a_clear_error(tmp_path):
    with pytest.raises(InvalidInput, match="cannot read"):
        read_queries(str(tmp_path / "missing.csv"))
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00image")
    with pytest.raises(InvalidInput, match="cannot read"):
        read_queries(str(tmp_path / "binary.csv"))


@pytest.mark.parametrize("raw", ["1,2,3", "a,b,c,d", [1, 2, 3], [1, 2, "x", 4], 7, {"x": 1}])
def test_a_bad_box_is_a_clear_error(raw):
    with pytest.raises(InvalidInput, match="box is"):
        parse_box(raw)


def test_the_batch_command_rejects_a_malformed_file_before_it_starts_anything(tmp_path, capsys):
    from cluster.cli import main
    queries = write(tmp_path, "q.csv", "image,box\na.jpg,1,2,3,4\n")
    storage, out = tmp_path / "storage", tmp_path / "out.jsonl"
    assert main(["batch", queries, "--out", str(out), "--storage", str(storage)]) == 2
    assert "line 2: more fields than the header has" in capsys.readouterr().err
    assert not storage.exists() and not out.exists()


def test_resume_point_counts_whole_answer_lines_of_the_same_queries_and_changes_nothing(tmp_path):
    from cluster.batch import resume_point
    rows = read_queries(write(tmp_path, "q.jsonl", "".join(f'{{"image": "p{i}.jpg", "id": {i}}}\n' for i in range(4))))
    out = tmp_path / "results.jsonl"
    assert resume_point(str(out), rows) == (0, 0)                    # no file yet: from the start
    done = "".join(json.dumps({"query": r, "results": []}) + "\n" for r in rows[:2])
    out.write_text(done + '{"query": {"ima')                          # a third line cut by a crash
    assert resume_point(str(out), rows) == (2, len(done))
    assert out.read_text() == done + '{"query": {"ima'                # read only
    out.write_text(json.dumps({"query": rows[1], "results": []}) + "\n")
    with pytest.raises(InvalidInput, match="line 1 does not answer row 1"):
        resume_point(str(out), rows)                                  # the results of other queries
    out.write_text("not json\n")
    with pytest.raises(InvalidInput, match="line 1: not an answer line"):
        resume_point(str(out), rows)
    out.write_text(done + done)                                       # more answers than queries
    with pytest.raises(InvalidInput, match="line 3 does not answer row 3"):
        resume_point(str(out), rows[:2])


def test_a_rows_filters_are_read_as_the_index_spells_them():
    """Per row, as /search reads its `filters`: comma-separated or a list, 'gender=men' is 'gender=Men'."""
    from cluster.batch import row_filters
    from models.taxonomy import FILE, Taxonomy
    vocabulary = Taxonomy.load(FILE)
    assert row_filters({"filters": "gender=men, colour=navy blue,,brand=Acme"}, vocabulary) == (
        "gender=Men", "baseColour=Navy Blue", "brand=Acme")
    assert row_filters({"filters": ["usage=sports", "usage=Sports"]}, vocabulary) == ("usage=Sports",)
    assert row_filters({"filters": ""}, vocabulary) == row_filters({}, vocabulary) == ()
    with pytest.raises(InvalidInput, match="field=value"):
        row_filters({"filters": "not a token"}, vocabulary)
