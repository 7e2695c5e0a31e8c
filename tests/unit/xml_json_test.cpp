#include "transform/xml_json.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <string_view>
#include <vector>

using namespace sluice::transform;

namespace {

constexpr std::string_view kDecl = R"(<?xml version="1.0" encoding="UTF-8"?>)";

const Limits kDefault{};

std::string xml_doc(std::string_view element) { return std::string(kDecl) + std::string(element); }

// The JSON texts are equal as values (object member order aside).
bool same_json(std::string_view a, std::string_view b) {
  boost::json::error_code ea, eb;
  const boost::json::value va = boost::json::parse(a, ea);
  const boost::json::value vb = boost::json::parse(b, eb);
  return !ea && !eb && va == vb;
}

// --- XML -> JSON -------------------------------------------------------------------------------

struct XmlCase {
  const char* what;
  std::string_view xml;
  std::string_view json;  // exact expected output
};

const XmlCase kXmlCases[] = {
    {"attributes and repeated elements", R"(<order id="7"><item>a</item><item>b</item></order>)",
     R"({"order":{"@id":"7","item":["a","b"]}})"},
    {"leaf text is a string", "<a>hello</a>", R"({"a":"hello"})"},
    {"declaration and indentation are ignored",
     "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>\n  <b>1</b>\n  <c>2</c>\n</a>\n",
     R"({"a":{"b":"1","c":"2"}})"},
    {"attributes plus text", R"(<price currency="EUR">9.90</price>)",
     R"({"price":{"@currency":"EUR","#text":"9.90"}})"},
    {"nested elements", "<a><b><c><d>x</d></c></b></a>", R"({"a":{"b":{"c":{"d":"x"}}}})"},
    {"array of objects", R"(<list><p id="1"><n>x</n></p><p id="2"/></list>)",
     R"({"list":{"p":[{"@id":"1","n":"x"},{"@id":"2"}]}})"},
    {"empty elements are empty strings", "<a><b/><c></c><d>  </d></a>",
     R"({"a":{"b":"","c":"","d":"  "}})"},
    {"empty root", "<a/>", R"({"a":""})"},
    {"namespace prefixes and declarations are kept",
     R"(<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/"><soap:Body>)"
     R"(<m:Get xmlns:m="urn:x">1</m:Get></soap:Body></soap:Envelope>)",
     R"({"soap:Envelope":{"@xmlns:soap":"http://schemas.xmlsoap.org/soap/envelope/",)"
     R"("soap:Body":{"m:Get":{"@xmlns:m":"urn:x","#text":"1"}}}})"},
    {"default namespace", R"(<feed xmlns="http://www.w3.org/2005/Atom"><title>t</title></feed>)",
     R"({"feed":{"@xmlns":"http://www.w3.org/2005/Atom","title":"t"}})"},
    {"CDATA is text", "<a><![CDATA[<b>&amp;</b>]]></a>", R"({"a":"<b>&amp;</b>"})"},
    {"CDATA and text concatenate", "<a>x<![CDATA[<y>]]>z</a>", R"({"a":"x<y>z"})"},
    {"empty CDATA", "<a><![CDATA[]]></a>", R"({"a":""})"},
    {"references in CDATA are text", "<a><![CDATA[&#65;]]></a>", R"({"a":"&#65;"})"},
    {"predefined entities and character references",
     R"(<a t="&quot;&apos;">&amp; &lt; &gt; &#x41;&#66;</a>)",
     R"({"a":{"@t":"\"'","#text":"& < > AB"}})"},
    {"unicode names and text", "<città nome=\"Zürich\">日本語 😀</città>",
     R"({"città":{"@nome":"Zürich","#text":"日本語 😀"}})"},
    {"astral character reference", "<a>&#x1F600;&#233;</a>", R"({"a":"😀é"})"},
    {"mixed content concatenates text", "<p>Hello <b>world</b>, bye</p>",
     R"({"p":{"#text":"Hello , bye","b":"world"}})"},
    {"comments and processing instructions are dropped",
     "<!-- c --><?pi x?><a><!--x-->t<?p?>u</a><!-- end -->", R"({"a":"tu"})"},
    {"interleaved repeats group in first-seen order", "<a><b>1</b><c>2</c><b>3</b></a>",
     R"({"a":{"b":["1","3"],"c":"2"}})"},
    {"leaf text is kept verbatim", "<a>  x\n y </a>", R"({"a":"  x\n y "})"},
    {"line ends are normalised, CR references kept", "<a>x\r\ny\rz&#13;</a>",
     R"({"a":"x\ny\nz\r"})"},
    {"attribute whitespace is normalised, references kept",
     "<a t=\"x\ty\nz\" u=\"&#9;&#10;&#13;\"/>", R"({"a":{"@t":"x y z","@u":"\t\n\r"}})"},
    {"whitespace-only text of an element with attributes", "<a x=\"1\"> </a>",
     R"({"a":{"@x":"1","#text":" "}})"},
    {"byte order mark", "\xEF\xBB\xBF<a/>", R"({"a":""})"},
    {"single-quoted attribute", "<a x='1'/>", R"({"a":{"@x":"1"}})"},
    {"no guessing: numbers and booleans stay strings", "<n><i>42</i><b>true</b><z/></n>",
     R"({"n":{"i":"42","b":"true","z":""}})"},
    {"JSON-special characters are escaped", R"(<a>"q" \ /</a>)", R"({"a":"\"q\" \\ /"})"},
    {"unknown entity references stay literal", "<a>AT&T &foo;</a>", R"({"a":"AT&T &foo;"})"},
    {"US-ASCII declaration", "<?xml version='1.0' encoding='us-ascii'?><a/>", R"({"a":""})"},
    {"whitespace text beside elements is dropped", "<a> <b/> <c>x</c>\n</a>",
     R"({"a":{"b":"","c":"x"}})"},
    {"significant text beside elements is kept", "<a>&#32;<b/></a>",
     R"({"a":{"#text":" ","b":""}})"},
};

TEST(XmlToJson, ConvertsTheConventionTable) {
  for (const XmlCase& c : kXmlCases) {
    const Result r = xml_to_json(c.xml, kDefault);
    EXPECT_TRUE(r.ok()) << c.what << ": " << r.error;
    EXPECT_EQ(r.body, c.json) << c.what;
  }
}

struct ErrorCase {
  const char* what;
  std::string_view input;
  Failure failure;
  std::string_view message;  // a substring of Result::error
};

const ErrorCase kXmlErrors[] = {
    {"mismatched end tag", "<a>\n  <b>\n</a>", Failure::Malformed, "line 3"},
    {"unclosed element", "<a>", Failure::Malformed, "malformed XML"},
    {"bad attribute syntax", "<a x=1/>", Failure::Malformed, "line 1, column"},
    {"empty body", "", Failure::Malformed, "no root element"},
    {"comment only", "<!-- x -->", Failure::Malformed, "no root element"},
    {"two root elements", "<a/><b/>", Failure::Malformed, "more than one root element"},
    {"text after the root", "<a/>junk", Failure::Malformed, "text outside the root element"},
    {"text before the root", "junk<a/>", Failure::Malformed, "text outside the root element"},
    {"internal DTD with an entity",
     "<?xml version=\"1.0\"?>\n<!DOCTYPE a [<!ENTITY x \"y\">]><a>&x;</a>", Failure::Refused,
     "DOCTYPE is not allowed (no DTDs, no entity declarations) at line 2, column 1"},
    {"billion laughs",
     "<!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;&lol;\">"
     "<!ENTITY lol3 \"&lol2;&lol2;&lol2;&lol2;&lol2;\">]><lolz>&lol3;</lolz>",
     Failure::Refused, "DOCTYPE"},
    {"external entity (XXE)",
     "<!DOCTYPE a [<!ENTITY xxe SYSTEM \"file:///etc/passwd\">]><a>&xxe;</a>", Failure::Refused,
     "DOCTYPE"},
    {"external DTD", "<!DOCTYPE html SYSTEM \"http://example.com/x.dtd\"><html/>", Failure::Refused,
     "DOCTYPE"},
    {"invalid UTF-8", "<a>\xC3\x28</a>", Failure::Malformed, "invalid UTF-8"},
    {"overlong UTF-8", "<a>\xC0\xAF</a>", Failure::Malformed, "invalid UTF-8"},
    {"UTF-16", std::string_view("\xFF\xFE<\0a\0/\0>\0", 10), Failure::Malformed,
     "invalid UTF-8 (only UTF-8 XML is supported) at line 1, column 1"},
    {"control character", "<a>\x01</a>", Failure::Malformed, "U+0001 is not allowed in XML"},
    {"NUL byte", std::string_view("<a>\0</a>", 8), Failure::Malformed, "U+0000"},
    {"U+FFFE", "<a>\xEF\xBF\xBE</a>", Failure::Malformed, "U+FFFE"},
    {"reference to NUL", "<a>\n&#0;</a>", Failure::Malformed,
     "character reference \"&#0;\" is malformed or not an XML character at line 2, column 1"},
    {"reference to a control character", "<a x=\"&#x1;\"/>", Failure::Malformed, "&#x1;"},
    {"reference to a surrogate", "<a>&#xD800;</a>", Failure::Malformed, "&#xD800;"},
    {"reference beyond Unicode", "<a>&#x110000;</a>", Failure::Malformed, "&#x110000;"},
    {"overflowing reference", "<a>&#99999999999999999999;</a>", Failure::Malformed,
     "not an XML character"},
    {"reference without digits", "<a>&#;</a>", Failure::Malformed, "\"&#;\" is malformed"},
    {"reference without semicolon", "<a>&#65</a>", Failure::Malformed, "\"&#65<\" is malformed"},
    {"reference in an attribute after '<?'", "<a t=\"<?&#5;\"/>", Failure::Malformed, "&#5;"},
    {"even inside CDATA, a reference to NUL", "<a><![CDATA[&#0;]]></a>", Failure::Malformed,
     "&#0;"},
    {"non-UTF-8 encoding", "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>", Failure::Refused,
     "encoding \"ISO-8859-1\" is not supported"},
    {"duplicate attribute", "<a>\n <b x=\"1\" x=\"2\"/></a>", Failure::Malformed,
     "duplicate attribute \"x\" at line 2, column 2"},
    {"name outside XML's name characters", "<a\xC3\x97/>", Failure::Malformed,
     "invalid element name"},
};

TEST(XmlToJson, RejectsInvalidDocumentsSayingWhatAndWhere) {
  for (const ErrorCase& c : kXmlErrors) {
    const Result r = xml_to_json(c.input, kDefault);
    EXPECT_EQ(r.failure, c.failure) << c.what << ": " << r.error;
    EXPECT_FALSE(r.ok()) << c.what;
    EXPECT_TRUE(r.body.empty()) << c.what;
    EXPECT_NE(r.error.find(c.message), std::string::npos) << c.what << ": " << r.error;
  }
}

std::string nested_xml(size_t depth) {
  std::string xml;
  for (size_t i = 0; i < depth; ++i) xml += "<e>";
  xml += "x";
  for (size_t i = 0; i < depth; ++i) xml += "</e>";
  return xml;
}

TEST(XmlToJson, NestingBeyondMaxDepthIsRefused) {
  EXPECT_TRUE(xml_to_json(nested_xml(64), kDefault).ok());
  const Result r = xml_to_json(nested_xml(65), kDefault);
  EXPECT_EQ(r.failure, Failure::TooDeep);
  EXPECT_NE(r.error.find("nested deeper than 64 elements at line 1, column 193"), std::string::npos)
      << r.error;
  EXPECT_EQ(xml_to_json(nested_xml(3), Limits{.max_depth = 2}).failure, Failure::TooDeep);
  // Far beyond any limit: refused, no stack overflow.
  EXPECT_EQ(xml_to_json(nested_xml(100'000), kDefault).failure, Failure::TooDeep);
  EXPECT_EQ(xml_to_json(nested_xml(100'000), Limits{.max_depth = 1'000'000}).failure,
            Failure::TooDeep);
}

TEST(XmlToJson, OutputBeyondMaxOutputIsRefused) {
  const std::string_view xml = R"(<order id="7"><item>a</item><item>b</item></order>)";
  const std::string json = xml_to_json(xml, kDefault).body;
  EXPECT_TRUE(xml_to_json(xml, Limits{.max_output = json.size()}).ok());
  const Result r = xml_to_json(xml, Limits{.max_output = json.size() - 1});
  EXPECT_EQ(r.failure, Failure::TooLarge);
  EXPECT_TRUE(r.body.empty());
  EXPECT_NE(r.error.find("exceeds max_output"), std::string::npos);

  std::string big = "<a>";
  for (int i = 0; i < 100'000; ++i) big += "<b>0123456789</b>";
  big += "</a>";
  EXPECT_EQ(xml_to_json(big, Limits{.max_output = 100'000}).failure, Failure::TooLarge);
}

// --- JSON -> XML -------------------------------------------------------------------------------

struct JsonCase {
  const char* what;
  std::string_view json;
  std::string_view xml;  // exact expected output after the declaration
  bool canonical;        // in the canonical form: json -> xml -> json is the identity
};

const JsonCase kJsonCases[] = {
    {"attributes and repeated elements", R"({"order":{"@id":"7","item":["a","b"]}})",
     R"(<order id="7"><item>a</item><item>b</item></order>)", true},
    {"leaf string", R"({"a":"hello"})", "<a>hello</a>", true},
    {"attributes plus text", R"({"price":{"@currency":"EUR","#text":"9.90"}})",
     R"(<price currency="EUR">9.90</price>)", true},
    {"nested objects", R"({"a":{"b":{"c":{"d":"x"}}}})", "<a><b><c><d>x</d></c></b></a>", true},
    {"array of objects", R"({"list":{"p":[{"@id":"1","n":"x"},{"@id":"2"}]}})",
     R"(<list><p id="1"><n>x</n></p><p id="2"/></list>)", true},
    {"numbers, booleans and null",
     R"({"n":{"i":42,"neg":-7,"u":18446744073709551615,"f":1.50,"e":1e2,"t":true,"f2":false,"z":null}})",
     "<n><i>42</i><neg>-7</neg><u>18446744073709551615</u><f>1.5</f><e>100</e><t>true</t>"
     "<f2>false</f2><z/></n>",
     false},
    {"doubles in shortest form",
     R"({"d":{"a":1e300,"b":12345678901234567890123,"c":-0.0,"d":0.1,"e":2.5e-7}})",
     "<d><a>1e+300</a><b>1.2345678901234568e+22</b><c>-0</c><d>0.1</d><e>2.5e-07</e></d>", false},
    {"scalar attributes", R"({"a":{"@n":1,"@b":true,"@z":null,"@s":"x"}})",
     R"(<a n="1" b="true" z="" s="x"/>)", false},
    {"top-level array", R"([1,"a",null])", "<root><item>1</item><item>a</item><item/></root>",
     false},
    {"top-level string", R"("hi")", "<root>hi</root>", false},
    {"top-level number", "42", "<root>42</root>", false},
    {"top-level null", "null", "<root/>", false},
    {"top-level object with several keys", R"({"a":1,"b":2})", "<root><a>1</a><b>2</b></root>",
     false},
    {"top-level key holding an array", R"({"a":["x","y"]})", "<root><a>x</a><a>y</a></root>",
     false},
    {"top-level attribute", R"({"@v":"1"})", R"(<root v="1"/>)", false},
    {"empty top-level object", "{}", "<root/>", false},
    {"arrays in arrays become item elements", R"({"m":{"row":[[1,2],[3]]}})",
     "<m><row><item>1</item><item>2</item></row><row><item>3</item></row></m>", false},
    {"escaping", R"({"a":{"@q":"\"<&>'\t\n\r","#text":"<&>]]>\"'\r\n\t"}})",
     "<a q=\"&quot;&lt;&amp;&gt;'&#9;&#10;&#13;\">&lt;&amp;&gt;]]&gt;\"'&#13;\n\t</a>", true},
    {"unicode", R"({"città":{"@nome":"Zürich","#text":"日本語 😀 \u00e9"}})",
     "<città nome=\"Zürich\">日本語 😀 é</città>", true},
    {"namespaces",
     R"({"soap:Envelope":{"@xmlns:soap":"urn:s","soap:Body":{"m:Get":{"@xmlns:m":"urn:x","#text":"1"}}}})",
     R"(<soap:Envelope xmlns:soap="urn:s"><soap:Body><m:Get xmlns:m="urn:x">1</m:Get>)"
     R"(</soap:Body></soap:Envelope>)",
     true},
    {"empty string, array and object", R"({"a":{"s":"","arr":[],"o":{}}})", "<a><s/><o/></a>",
     false},
    {"mixed content", R"({"p":{"#text":"Hello","b":"world"}})", "<p>Hello<b>world</b></p>", true},
    {"whitespace-only text beside elements is written as references",
     R"({"p":{"#text":" \n","b":"x"}})", "<p>&#32;&#10;<b>x</b></p>", true},
    {"whitespace-only leaf", R"({"p":{"q":" ","r":{"@x":"1","#text":"\t"}}})",
     "<p><q> </q><r x=\"1\">\t</r></p>", true},
    {"number as text", R"({"a":{"@x":"1","#text":3.25}})", R"(<a x="1">3.25</a>)", false},
    {"null text", R"({"a":{"@x":"1","#text":null}})", R"(<a x="1"/>)", false},
    {"text-only object", R"({"a":{"#text":"x"}})", "<a>x</a>", false},
    {"attributes first whatever the key order", R"({"a":{"b":"1","#text":"t","@x":"2"}})",
     R"(<a x="2">t<b>1</b></a>)", true},
    {"only empty arrays", R"({"a":{"b":[],"c":[],"#text":" "}})", "<a> </a>", false},
    {"single-entry array", R"({"a":{"b":["x"]}})", "<a><b>x</b></a>", false},
    {"duplicate keys: the last wins", R"({"a":{"b":"1","b":"2"}})", "<a><b>2</b></a>", false},
};

TEST(JsonToXml, ConvertsTheConventionTable) {
  for (const JsonCase& c : kJsonCases) {
    const Result r = json_to_xml(c.json, kDefault);
    EXPECT_TRUE(r.ok()) << c.what << ": " << r.error;
    EXPECT_EQ(r.body, xml_doc(c.xml)) << c.what;
  }
}

const ErrorCase kJsonErrors[] = {
    {"syntax error", "{\"a\":\n  }", Failure::Malformed, "invalid JSON ("},
    {"syntax error position", R"({"a":1,})", Failure::Malformed, "line 1, column 8"},
    {"trailing garbage", R"({"a":1} x)", Failure::Malformed, "invalid JSON"},
    {"empty body", "", Failure::Malformed, "invalid JSON"},
    {"comments are not JSON", R"({"a":1 /*x*/})", Failure::Malformed, "invalid JSON"},
    {"invalid UTF-8", "{\"a\":\"\xC3\x28\"}", Failure::Malformed, "invalid JSON"},
    {"lone surrogate", R"({"a":"\ud800"})", Failure::Malformed, "invalid JSON"},
    {"key that is no element name", R"({"1a":"x"})", Failure::NotRepresentable,
     R"("1a" is not a valid XML element name at "/1a")"},
    {"key with a space", R"({"a":{"b c":"x"}})", Failure::NotRepresentable, R"(at "/a/b c")"},
    {"empty key", R"({"a":{"":"x"}})", Failure::NotRepresentable, "not a valid XML element name"},
    {"other # keys", R"({"a":{"#foo":"x"}})", Failure::NotRepresentable,
     R"("#foo" is not a valid XML element name)"},
    {"bad key in an array entry", R"({"a":{"b":[{"ok":1},{"x/y~":1}]}})", Failure::NotRepresentable,
     R"(at "/a/b/1/x~1y~0")"},
    {"empty attribute name", R"({"a":{"@":"x"}})", Failure::NotRepresentable,
     R"("" is not a valid XML attribute name at "/a/@")"},
    {"attribute name starting with a digit", R"({"a":{"@1":"x"}})", Failure::NotRepresentable,
     "not a valid XML attribute name"},
    {"object as an attribute value", R"({"a":{"@x":{}}})", Failure::NotRepresentable,
     R"(attribute "@x" must be a string, number, boolean or null at "/a/@x")"},
    {"array as an attribute value", R"({"a":{"@x":[1]}})", Failure::NotRepresentable,
     "must be a string"},
    {"array as text", R"({"a":{"#text":[1]}})", Failure::NotRepresentable,
     R"("#text" must be a string, number, boolean or null at "/a/#text")"},
    {"control character", R"({"a":{"b":["x","\u0001"]}})", Failure::NotRepresentable,
     R"(U+0001 (which XML 1.0 cannot represent) in string "\x01" at "/a/b/1")"},
    {"NUL", R"({"a":"x\u0000"})", Failure::NotRepresentable, "U+0000"},
    {"U+FFFF in an attribute", R"({"a":{"@x":"\uffff"}})", Failure::NotRepresentable, "U+FFFF"},
    {"invalid top-level name", R"({"a b":{}})", Failure::NotRepresentable, R"(at "/a b")"},
};

TEST(JsonToXml, RejectsInvalidDocumentsSayingWhatAndWhere) {
  for (const ErrorCase& c : kJsonErrors) {
    const Result r = json_to_xml(c.input, kDefault);
    EXPECT_EQ(r.failure, c.failure) << c.what << ": " << r.error;
    EXPECT_TRUE(r.body.empty()) << c.what;
    EXPECT_NE(r.error.find(c.message), std::string::npos) << c.what << ": " << r.error;
  }
}

TEST(JsonToXml, LongNamesAndValuesAreCutInErrors) {
  const std::string key(1000, 'k');
  const Result r = json_to_xml(R"({"a":{")" + key + R"( ":1}})", kDefault);
  EXPECT_EQ(r.failure, Failure::NotRepresentable);
  EXPECT_LT(r.error.size(), 200u) << r.error;
}

std::string nested_json(size_t depth) {
  std::string json;
  for (size_t i = 0; i < depth; ++i) json += R"({"e":)";
  json += R"("x")";
  json += std::string(depth, '}');
  return json;
}

TEST(JsonToXml, NestingBeyondMaxDepthIsRefused) {
  EXPECT_TRUE(json_to_xml(nested_json(64), kDefault).ok());
  const Result r = json_to_xml(nested_json(65), kDefault);
  EXPECT_EQ(r.failure, Failure::TooDeep);
  EXPECT_NE(r.error.find("nested deeper than 64 XML elements"), std::string::npos) << r.error;
  // Arrays in arrays are one element level each.
  EXPECT_EQ(json_to_xml(std::string(63, '[') + std::string(63, ']'), kDefault).failure,
            Failure::None);
  EXPECT_EQ(json_to_xml(std::string(65, '[') + std::string(65, ']'), kDefault).failure,
            Failure::TooDeep);
  // The parser itself stops far-too-deep input.
  const Result deep = json_to_xml(std::string(100'000, '[') + std::string(100'000, ']'),
                                  Limits{.max_depth = 1'000'000});
  EXPECT_EQ(deep.failure, Failure::TooDeep);
  EXPECT_NE(deep.error.find("limit 2002"), std::string::npos) << deep.error;
}

TEST(JsonToXml, OutputBeyondMaxOutputIsRefused) {
  const std::string_view json = R"({"order":{"@id":"7","item":["a","b"]}})";
  const std::string xml = json_to_xml(json, kDefault).body;
  EXPECT_TRUE(json_to_xml(json, Limits{.max_output = xml.size()}).ok());
  const Result r = json_to_xml(json, Limits{.max_output = xml.size() - 1});
  EXPECT_EQ(r.failure, Failure::TooLarge);
  EXPECT_TRUE(r.body.empty());

  // A long key repeated by a long array amplifies ~1000x: stops at the limit, quickly.
  std::string amplifier = R"({"a":{")" + std::string(1000, 'k') + R"(":[)";
  for (int i = 0; i < 100'000; ++i) amplifier += i == 0 ? "1" : ",1";
  amplifier += "]}}";
  const auto start = std::chrono::steady_clock::now();
  const Result big = json_to_xml(amplifier, Limits{.max_output = 1 << 20});
  EXPECT_EQ(big.failure, Failure::TooLarge);
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(2));
}

// --- Round trips -------------------------------------------------------------------------------

// xml -> json -> xml -> json gives the same JSON text, and the XML written is a fixpoint.
void expect_xml_round_trip(std::string_view xml, const std::string& what) {
  const Limits limits{.max_output = 64 << 20, .max_depth = 64};
  const Result json = xml_to_json(xml, limits);
  ASSERT_TRUE(json.ok()) << what << ": " << json.error << "\n" << xml;
  const Result xml2 = json_to_xml(json.body, limits);
  ASSERT_TRUE(xml2.ok()) << what << ": " << xml2.error << "\n" << json.body;
  const Result json2 = xml_to_json(xml2.body, limits);
  ASSERT_TRUE(json2.ok()) << what << ": " << json2.error << "\n" << xml2.body;
  EXPECT_EQ(json2.body, json.body) << what << "\n" << xml << "\n" << xml2.body;
  EXPECT_EQ(json_to_xml(json2.body, limits).body, xml2.body) << what;
}

// json -> xml -> json gives the same JSON value.
void expect_json_identity(std::string_view json, const std::string& what) {
  const Result xml = json_to_xml(json, kDefault);
  ASSERT_TRUE(xml.ok()) << what << ": " << xml.error << "\n" << json;
  const Result json2 = xml_to_json(xml.body, kDefault);
  ASSERT_TRUE(json2.ok()) << what << ": " << json2.error << "\n" << xml.body;
  EXPECT_TRUE(same_json(json2.body, json)) << what << "\n"
                                           << json << "\n"
                                           << xml.body << "\n"
                                           << json2.body;
}

TEST(RoundTrip, TableXmlSurvivesXmlJsonXmlJson) {
  for (const XmlCase& c : kXmlCases) expect_xml_round_trip(c.xml, c.what);
}

TEST(RoundTrip, CanonicalTableJsonSurvivesJsonXmlJson) {
  for (const JsonCase& c : kJsonCases) {
    if (c.canonical) expect_json_identity(c.json, c.what);
  }
}

TEST(RoundTrip, AnyConvertedJsonGivesAnXmlFixpoint) {
  // Whatever json_to_xml accepts, its XML converts back to JSON that writes the same XML.
  for (const JsonCase& c : kJsonCases) {
    const std::string xml = json_to_xml(c.json, kDefault).body;
    expect_xml_round_trip(xml, c.what);
    const Result json = xml_to_json(xml, kDefault);
    EXPECT_EQ(json_to_xml(json.body, kDefault).body, xml) << c.what;
  }
}

class Generator {
 public:
  explicit Generator(uint32_t seed) : rng_(seed) {}

  // A JSON document in the canonical form (see docs/transform.md).
  boost::json::value canonical_json() {
    boost::json::object top;
    top.emplace(pick(kNames), element_value(1));
    return top;
  }

  // An XML document that xml_to_json accepts: attributes, text with references, CDATA,
  // comments, processing instructions, indentation, repeated and interleaved elements.
  std::string xml() {
    std::string out;
    if (chance(2)) out += "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    if (chance(4)) out += "<!-- head -->";
    element(out, 1);
    if (chance(4)) out += "\n<?tail x?>\n";
    return out;
  }

 private:
  static constexpr std::string_view kNames[] = {"a", "b",   "item", "x:y",  "soap:Body", "_u",
                                                "é", "n-1", "n.2",  "日本", "c",         "xmlns"};
  static constexpr std::string_view kAttributeNames[] = {"id", "x:y",  "xmlns", "xmlns:soap",
                                                         "é",  "lang", "n-1"};
  static constexpr std::string_view kText[] = {
      "a", "Zz",  "0", " ",    "\t", "\n",    "\r",     "\r\n", "<", ">",    "&",  "\"",
      "'", "]]>", "é", "中文", "😀",  "&amp;", "\u00a0", "x y",  "=", "true", "42", "\\"};

  bool chance(int one_in) { return std::uniform_int_distribution<int>(1, one_in)(rng_) == 1; }
  int between(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }
  template <size_t N>
  std::string_view pick(const std::string_view (&options)[N]) {
    return options[std::uniform_int_distribution<size_t>(0, N - 1)(rng_)];
  }

  std::string text(int max_pieces) {
    std::string s;
    for (int i = between(0, max_pieces); i > 0; --i) s += pick(kText);
    return s;
  }

  boost::json::value element_value(int depth) {
    if (depth >= 5 || chance(3)) return boost::json::string(text(4));
    boost::json::object object;
    for (int i = between(0, 2); i > 0; --i) {
      object["@" + std::string(pick(kAttributeNames))] = boost::json::string(text(3));
    }
    for (int i = between(0, 3); i > 0; --i) {
      const std::string_view name = pick(kNames);
      if (chance(3)) {
        boost::json::array siblings;
        for (int k = between(2, 4); k > 0; --k) siblings.push_back(element_value(depth + 1));
        object[name] = std::move(siblings);
      } else {
        object[name] = element_value(depth + 1);
      }
    }
    if (object.empty()) object["@id"] = boost::json::string(text(2));
    if (chance(3)) {
      std::string t = text(3);
      if (t.empty()) t = "t";
      object[std::string(kTextKeyName)] = boost::json::string(t);
    }
    return object;
  }

  static constexpr std::string_view kTextKeyName = "#text";

  // Escapes text for XML in one of several equivalent ways.
  void escaped(std::string& out, std::string_view s, bool attribute) {
    for (char c : s) {
      switch (c) {
        case '&':
          out += chance(2) ? "&amp;" : "&#38;";
          break;
        case '<':
          out += chance(2) ? "&lt;" : "&#x3C;";
          break;
        case '>':
          out += chance(2) ? "&gt;" : ">";
          break;
        case '"':
          out += attribute ? "&quot;" : (chance(2) ? "\"" : "&quot;");
          break;
        case '\'':
          out += chance(2) ? "'" : "&apos;";
          break;
        case '\r':
          out += "&#13;";
          break;
        case '\t':
        case '\n':
          if (attribute) {
            out += c == '\t' ? "&#9;" : "&#10;";
          } else {
            out += c;
          }
          break;
        case 'a':
          out += chance(4) ? "&#97;" : "a";
          break;
        default:
          out += c;
      }
    }
  }

  void element(std::string& out, int depth) {
    const std::string_view name = pick(kNames);
    out += '<';
    out += name;
    std::vector<std::string_view> seen;
    for (int i = between(0, 2); i > 0; --i) {
      const std::string_view attribute = pick(kAttributeNames);
      if (std::find(seen.begin(), seen.end(), attribute) != seen.end()) continue;
      seen.push_back(attribute);
      out += chance(3) ? "\n  " : " ";
      out += attribute;
      out += "=\"";
      escaped(out, text(3), true);
      out += '"';
    }
    const int children = depth >= 5 ? 0 : between(0, 5);
    if (children == 0 && chance(2)) {
      out += "/>";
      return;
    }
    out += '>';
    for (int i = 0; i < children; ++i) {
      switch (between(0, 6)) {
        case 0:
          escaped(out, text(3), false);
          break;
        case 1: {
          std::string cdata = text(3);
          for (size_t at; (at = cdata.find("]]>")) != std::string::npos;) cdata.erase(at, 3);
          out += "<![CDATA[" + cdata + "]]>";
          break;
        }
        case 2:
          out += chance(2) ? "<!-- note -->" : "\n    ";
          break;
        case 3:
          out += "<?pi data?>";
          break;
        default:
          element(out, depth + 1);
      }
    }
    out += "</";
    out += name;
    out += '>';
  }

  std::mt19937 rng_;
};

TEST(RoundTrip, RandomXmlSurvivesXmlJsonXmlJson) {
  Generator gen(20240611);
  for (int i = 0; i < 400; ++i)
    expect_xml_round_trip(gen.xml(), "random xml #" + std::to_string(i));
}

TEST(RoundTrip, RandomCanonicalJsonSurvivesJsonXmlJson) {
  Generator gen(7);
  for (int i = 0; i < 400; ++i) {
    const std::string json = boost::json::serialize(gen.canonical_json());
    expect_json_identity(json, "random json #" + std::to_string(i));
    expect_xml_round_trip(json_to_xml(json, kDefault).body, "random json #" + std::to_string(i));
  }
}

TEST(RoundTrip, RoundTripHoldsAtTheDepthLimit) {
  // 64 levels of repeated elements are 128 levels of JSON: json_to_xml takes them back.
  std::string xml = "<e/>";
  for (int i = 1; i < 64; ++i) xml = "<e>" + xml + "<e/></e>";
  expect_xml_round_trip(xml, "deep");
}

// --- Size and speed ----------------------------------------------------------------------------

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(Performance, MegabyteBodiesConvertInLinearTime) {
  // Many repeated siblings (one growing array) and many distinct siblings (one wide object).
  std::string repeated = "<orders>";
  std::string wide = "<fields>";
  for (int i = 0; repeated.size() < (4 << 20); ++i) {
    repeated += "<order id=\"" + std::to_string(i) +
                "\"><item sku=\"A-1\">widget &amp; co</item><qty>3</qty><note><![CDATA[ok]]>"
                "</note></order>\n";
    if (wide.size() < (2 << 20))
      wide += "<f" + std::to_string(i) + ">value</f" + std::to_string(i) + ">";
  }
  repeated += "</orders>";
  wide += "</fields>";

  for (const std::string* xml : {&repeated, &wide}) {
    auto start = std::chrono::steady_clock::now();
    const Result json = xml_to_json(*xml, kDefault);
    const double to_json = seconds_since(start);
    ASSERT_TRUE(json.ok()) << json.error;
    start = std::chrono::steady_clock::now();
    const Result back = json_to_xml(json.body, kDefault);
    const double to_xml = seconds_since(start);
    ASSERT_TRUE(back.ok()) << back.error;
    std::printf("%zu-byte XML -> JSON %.1f ms; %zu-byte JSON -> XML %.1f ms (debug + ASan)\n",
                xml->size(), to_json * 1e3, json.body.size(), to_xml * 1e3);
    // Generous for a sanitised build on a busy machine; quadratic behaviour would take minutes.
    EXPECT_LT(to_json, 5.0);
    EXPECT_LT(to_xml, 5.0);
  }
}

// The messages quoted in docs/transform.md.
TEST(Errors, MessagesAreTheDocumentedOnes) {
  EXPECT_EQ(xml_to_json("<a>\n  <b>\n</a>", kDefault).error,
            "malformed XML (start-end tags mismatch) at line 3, column 3");
  EXPECT_EQ(json_to_xml(R"({"a":1,})", kDefault).error,
            "invalid JSON (syntax error) at line 1, column 8");
  EXPECT_EQ(json_to_xml(R"({"1a":"x"})", kDefault).error,
            R"("1a" is not a valid XML element name at "/1a")");
  EXPECT_EQ(json_to_xml(R"({"a":{"@x":{}}})", kDefault).error,
            R"(attribute "@x" must be a string, number, boolean or null at "/a/@x")");
  EXPECT_EQ(json_to_xml(R"({"a":{"b":["x","\u0001"]}})", kDefault).error,
            R"(U+0001 (which XML 1.0 cannot represent) in string "\x01" at "/a/b/1")");
  EXPECT_EQ(xml_to_json("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>", kDefault).error,
            R"(encoding "ISO-8859-1" is not supported (only UTF-8) at line 1, column 1)");
  EXPECT_EQ(json_to_xml(R"({"a":"x"})", Limits{.max_output = 10}).error,
            "XML output exceeds max_output (10 bytes)");
  const Result deep = json_to_xml(nested_json(65), kDefault);
  EXPECT_TRUE(deep.error.starts_with(R"(nested deeper than 64 XML elements at "/e/e/e/)"))
      << deep.error;
}

// --- Small API ---------------------------------------------------------------------------------

TEST(Api, NamesAndDispatch) {
  EXPECT_EQ(parse_conversion("xml_to_json"), Conversion::XmlToJson);
  EXPECT_EQ(parse_conversion("json_to_xml"), Conversion::JsonToXml);
  EXPECT_EQ(parse_conversion("xml2json"), std::nullopt);
  EXPECT_EQ(conversion_name(Conversion::JsonToXml), "json_to_xml");
  EXPECT_EQ(content_type(Conversion::XmlToJson), "application/json");
  EXPECT_EQ(content_type(Conversion::JsonToXml), "application/xml");
  EXPECT_EQ(convert(Conversion::XmlToJson, "<a>1</a>", kDefault).body, R"({"a":"1"})");
  EXPECT_EQ(convert(Conversion::JsonToXml, R"({"a":"1"})", kDefault).body, xml_doc("<a>1</a>"));
  EXPECT_EQ(failure_name(Failure::None), "");
  EXPECT_EQ(failure_name(Failure::TooLarge), "too_large");
  EXPECT_EQ(failure_name(Failure::NotRepresentable), "not_representable");
}

}  // namespace
