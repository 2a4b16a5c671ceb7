#!/usr/bin/env python3
"""Generates Swift encoders/decoders for Kafka messages.

Input: Kafka's own message definitions (apache/kafka
clients/src/main/resources/common/message/*.json), the ones Aqueduct serves, kept in
Sources/AqueductKafka/Schemas/. Output: Sources/AqueductKafka/Generated/*.swift,
committed. The generated code depends only on KafkaReader/KafkaWriter
(Sources/AqueductKafka/Protocol/KafkaCodec.swift).

    scripts/kafka-codegen.py          # regenerate
    scripts/kafka-codegen.py --check  # fail if the committed code differs (CI)
"""
import json
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.path.join(ROOT, "Sources/AqueductKafka/Schemas")
OUTPUT = os.path.join(ROOT, "Sources/AqueductKafka/Generated")
# Request samples for the tests live beside them, not in the module.
SAMPLES_NAME = "../../../Tests/AqueductKafkaTests/Generated/RequestSamples.swift"

SWIFT_KEYWORDS = {
    "protocol", "default", "internal", "operator", "repeat", "return", "import", "class", "struct",
    "enum", "func", "var", "let", "in", "is", "as", "self", "extension", "subscript", "init", "deinit",
    "where", "case", "switch", "for", "while", "if", "else", "do", "catch", "try", "throw", "throws",
    "nil", "true", "false", "static", "public", "private", "fileprivate", "open", "inout",
    "associatedtype", "typealias", "break", "continue", "fallthrough", "guard", "defer", "any", "some",
}

PRIMITIVES = {
    "bool": ("Bool", "false"),
    "int8": ("Int8", "0"),
    "int16": ("Int16", "0"),
    "uint16": ("UInt16", "0"),
    "int32": ("Int32", "0"),
    "int64": ("Int64", "0"),
    "float64": ("Double", "0"),
    "string": ("String", '""'),
    "bytes": ("[UInt8]", "[]"),
    "records": ("ByteBuffer?", "nil"),
    "uuid": ("KafkaUUID", ".zero"),
}
READ = {
    "bool": "readBool", "int8": "readInt8", "int16": "readInt16", "uint16": "readUInt16",
    "int32": "readInt32", "int64": "readInt64", "float64": "readFloat64", "uuid": "readUUID",
}
WRITE = {
    "bool": "writeBool", "int8": "writeInt8", "int16": "writeInt16", "uint16": "writeUInt16",
    "int32": "writeInt32", "int64": "writeInt64", "float64": "writeFloat64", "uuid": "writeUUID",
}


def load(path):
    text = open(path).read()
    text = re.sub(r"^\s*//.*$", "", text, flags=re.M)
    return json.loads(text)


def parse_versions(text):
    """(low, high) with high None for "N+"; None for "none"."""
    if text is None or text == "none":
        return None
    if text.endswith("+"):
        return (int(text[:-1]), None)
    if "-" in text:
        low, high = text.split("-")
        return (int(low), int(high))
    return (int(text), int(text))


def condition(versions, valid):
    """A Swift condition on `version` for a field range, within the message's valid range."""
    if versions is None:
        return "false"
    low, high = versions
    valid_low, valid_high = valid
    parts = []
    if low > valid_low:
        parts.append(f"version >= {low}")
    if high is not None and (valid_high is None or high < valid_high):
        parts.append(f"version <= {high}")
    return " && ".join(parts) if parts else "true"


def swift_name(name):
    result = name[0].lower() + name[1:]
    # Leading acronyms ("ID") stay readable as lower case.
    return f"`{result}`" if result in SWIFT_KEYWORDS else result


def bare(name):
    return name.strip("`")


class Field:
    def __init__(self, spec, structs, message_flexible):
        self.name = spec["name"]
        self.swift = swift_name(self.name)
        raw_type = spec["type"]
        self.array = raw_type.startswith("[]")
        self.base = raw_type[2:] if self.array else raw_type
        self.versions = parse_versions(spec["versions"])
        self.nullable = parse_versions(spec.get("nullableVersions"))
        self.tagged = parse_versions(spec.get("taggedVersions"))
        self.tag = spec.get("tag")
        self.about = spec.get("about", "")
        self.default_text = spec.get("default")
        # A field may opt out of compact encodings in flexible versions (the header's ClientId).
        self.never_compact = spec.get("flexibleVersions") == "none"
        self.is_struct = self.base not in PRIMITIVES
        if self.is_struct and "fields" in spec:
            structs.append(Struct(self.base, spec["fields"], structs, message_flexible, spec.get("about", "")))

    @property
    def element_type(self):
        return self.base if self.is_struct else PRIMITIVES[self.base][0]

    @property
    def swift_type(self):
        if self.array:
            result = f"[{self.element_type}]"
            return result + "?" if self.nullable else result
        if self.base == "records":
            return "ByteBuffer?"
        result = self.element_type
        return result + "?" if self.nullable else result

    def default(self):
        text = self.default_text
        if self.array:
            return "nil" if self.nullable and text == "null" else "[]"
        if self.is_struct:
            return "nil" if self.nullable else f"{self.base}()"
        if self.base == "records":
            return "nil"
        if text is None:
            if self.nullable and self.base in ("string", "bytes"):
                return "nil"
            return PRIMITIVES[self.base][1]
        if text == "null":
            return "nil"
        if self.base == "bool":
            return str(text).lower()
        if self.base == "string":
            return json.dumps(text)
        if self.base in ("int8", "int16", "uint16", "int32", "int64"):
            return str(int(text, 0) if isinstance(text, str) else int(text))
        if self.base == "float64":
            return text
        return PRIMITIVES[self.base][1]


class Struct:
    def __init__(self, name, field_specs, structs, message_flexible, about=""):
        self.name = name
        self.about = about
        self.fields = [Field(spec, structs, message_flexible) for spec in field_specs]


# Whether the struct being generated has flexible versions at all (else no `flexible`).
HAS_FLEXIBLE = [True]


def compact_expr(field):
    return "false" if field.never_compact or not HAS_FLEXIBLE[0] else "flexible"


def read_value(field, reader, valid, label):
    """Swift statements assigning the field's value read from `reader` to `value`."""
    compact = compact_expr(field)
    lines = []

    def element(target):
        if field.is_struct:
            return f"try {field.base}(from: &{reader}, version: version)"
        if field.base == "string":
            return f'try {reader}.readString("{label}", compact: {compact})'
        if field.base == "bytes":
            return f'try {reader}.readBytes("{label}", compact: {compact})'
        return f'try {reader}.{READ[field.base]}("{label}")'

    if field.array:
        count_call = "readNullableArrayCount" if field.nullable else "readArrayCount"
        if field.nullable:
            lines.append(f'if let count = try {reader}.{count_call}("{label}", compact: {compact}) {{')
        else:
            lines.append(f'do {{')
            lines.append(f'    let count = try {reader}.{count_call}("{label}", compact: {compact})')
        lines.append(f"    var items: [{field.element_type}] = []")
        lines.append(f"    items.reserveCapacity(count)")
        lines.append(f"    for _ in 0..<count {{ items.append({element('item')}) }}")
        lines.append(f"    self.{field.swift} = items")
        if field.nullable:
            lines.append("} else {")
            lines.append(f"    self.{field.swift} = nil")
        lines.append("}")
        return lines
    if field.is_struct:
        if field.nullable:
            lines.append(f'if try {reader}.readInt8("{label}") < 0 {{')
            lines.append(f"    self.{field.swift} = nil")
            lines.append("} else {")
            lines.append(f"    self.{field.swift} = try {field.base}(from: &{reader}, version: version)")
            lines.append("}")
        else:
            lines.append(f"self.{field.swift} = try {field.base}(from: &{reader}, version: version)")
        return lines
    if field.base == "string":
        call = "readNullableString" if field.nullable else "readString"
        lines.append(f'self.{field.swift} = try {reader}.{call}("{label}", compact: {compact})')
    elif field.base == "bytes":
        call = "readNullableBytes" if field.nullable else "readBytes"
        lines.append(f'self.{field.swift} = try {reader}.{call}("{label}", compact: {compact})')
    elif field.base == "records":
        lines.append(f'self.{field.swift} = try {reader}.readNullableRecords("{label}", compact: {compact})')
    else:
        lines.append(f'self.{field.swift} = try {reader}.{READ[field.base]}("{label}")')
    return lines


def write_value(field, writer, value):
    compact = compact_expr(field)
    lines = []

    def element(item):
        if field.is_struct:
            return f"{item}.encode(to: &{writer}, version: version)"
        if field.base == "string":
            return f"{writer}.writeString({item}, compact: {compact})"
        if field.base == "bytes":
            return f"{writer}.writeBytes({item}, compact: {compact})"
        return f"{writer}.{WRITE[field.base]}({item})"

    if field.array:
        if field.nullable:
            lines.append(f"{writer}.writeArrayCount({value}?.count, compact: {compact})")
            lines.append(f"for item in {value} ?? [] {{ {element('item')} }}")
        else:
            lines.append(f"{writer}.writeArrayCount({value}.count, compact: {compact})")
            lines.append(f"for item in {value} {{ {element('item')} }}")
        return lines
    if field.is_struct:
        if field.nullable:
            lines.append(f"if let present = {value} {{")
            lines.append(f"    {writer}.writeInt8(1)")
            lines.append(f"    present.encode(to: &{writer}, version: version)")
            lines.append("} else {")
            lines.append(f"    {writer}.writeInt8(-1)")
            lines.append("}")
        else:
            lines.append(f"{value}.encode(to: &{writer}, version: version)")
        return lines
    if field.base == "string":
        lines.append(f"{writer}.writeString({value}, compact: {compact})")
    elif field.base == "bytes":
        lines.append(f"{writer}.writeBytes({value}, compact: {compact})")
    elif field.base == "records":
        lines.append(f"{writer}.writeRecords({value}, compact: {compact})")
    else:
        lines.append(f"{writer}.{WRITE[field.base]}({value})")
    return lines


def indent(lines, level):
    pad = "    " * level
    return [pad + line if line else line for line in lines]


def regular_condition(field, valid):
    """When the field is encoded in the body (present, and not tagged in that version)."""
    present = condition(field.versions, valid)
    if field.tagged is None:
        return present
    tagged = condition(field.tagged, valid)
    if tagged == "true":
        return "false"
    return f"({present}) && !({tagged})"


def struct_code(struct, valid, flexible_versions, level, conformance):
    out = []
    if struct.about:
        out.append(f"/// {struct.about}")
    out.append(f"public struct {struct.name}: {conformance} {{")
    body = []
    for field in struct.fields:
        if field.about:
            body.append(f"/// {field.about}")
        body.append(f"public var {field.swift}: {field.swift_type} = {field.default()}")
    body.append("")
    if conformance == "KafkaMessage":
        body.append("public init() {}")
    else:
        # Nested structs: every field a labelled parameter with its default.
        params = ", ".join(f"{bare(f.swift)}: {f.swift_type} = {f.default()}" for f in struct.fields)
        body.append(f"public init({params}) {{")
        for f in struct.fields:
            body.append(f"    self.{f.swift} = {bare(f.swift)}")
        body.append("}")
    body.append("")
    flexible = condition(flexible_versions, valid) if flexible_versions else "false"
    # Decoder.
    body.append("public init(from reader: inout KafkaReader, version: Int16) throws(KafkaProtocolError) {")
    decode = [] if conformance == "KafkaMessage" else ["self.init()"]
    uses_flexible = flexible != "false"
    HAS_FLEXIBLE[0] = uses_flexible
    if uses_flexible:
        decode.append(f"let flexible = {flexible}")
    for field in struct.fields:
        cond = regular_condition(field, valid)
        if cond == "false":
            continue
        label = f"{struct.name}.{field.name}"
        reads = read_value(field, "reader", valid, label)
        if cond == "true":
            decode.extend(reads)
        else:
            decode.append(f"if {cond} {{")
            decode.extend(indent(reads, 1))
            decode.append("}")
    tagged_fields = sorted([f for f in struct.fields if f.tagged is not None], key=lambda f: f.tag)
    if uses_flexible:
        decode.append("if flexible {")
        decode.append(f'    let taggedCount = try reader.readUnsignedVarint("{struct.name} tagged fields")')
        decode.append("    for _ in 0..<taggedCount {")
        decode.append(f'        let tag = try reader.readUnsignedVarint("{struct.name} tag")')
        decode.append(f'        let size = Int(try reader.readUnsignedVarint("{struct.name} tag size"))')
        if tagged_fields:
            decode.append("        switch tag {")
            for field in tagged_fields:
                cond = condition(field.tagged, valid)
                guard = "" if cond == "true" else f" where {cond}"
                decode.append(f"        case {field.tag}{guard}:")
                decode.append(f'            var sub = try reader.subReader(size, "{struct.name}.{field.name}")')
                decode.extend(indent(read_value(field, "sub", valid, f"{struct.name}.{field.name}"), 3))
                decode.append(f"            _ = sub")
            decode.append("        default:")
            decode.append(f'            try reader.skip(size, "{struct.name} tagged field")')
            decode.append("        }")
        else:
            decode.append("        _ = tag")
            decode.append(f'        try reader.skip(size, "{struct.name} tagged field")')
        decode.append("    }")
        decode.append("}")
    if not decode:
        decode.append("_ = reader")
        decode.append("_ = version")
    elif not any("version" in line for line in decode):
        decode.append("_ = version")
    body.extend(indent(decode, 1))
    body.append("}")
    body.append("")
    # Encoder.
    body.append("public func encode(to writer: inout KafkaWriter, version: Int16) {")
    encode = []
    if uses_flexible:
        encode.append(f"let flexible = {flexible}")
    for field in struct.fields:
        cond = regular_condition(field, valid)
        if cond == "false":
            continue
        writes = write_value(field, "writer", f"self.{field.swift}")
        if cond == "true":
            encode.extend(writes)
        else:
            encode.append(f"if {cond} {{")
            encode.extend(indent(writes, 1))
            encode.append("}")
    if uses_flexible:
        encode.append("if flexible {")
        if tagged_fields:
            encode.append("    var taggedCount: UInt32 = 0")
            for field in tagged_fields:
                cond = condition(field.tagged, valid)
                test = f"self.{field.swift} != {field.default()}"
                if cond != "true":
                    test = f"{cond} && {test}"
                encode.append(f"    let write{bare(field.swift)[0].upper() + bare(field.swift)[1:]} = {test}")
                encode.append(f"    if write{bare(field.swift)[0].upper() + bare(field.swift)[1:]} {{ taggedCount += 1 }}")
            encode.append("    writer.writeUnsignedVarint(taggedCount)")
            for field in tagged_fields:
                flag = f"write{bare(field.swift)[0].upper() + bare(field.swift)[1:]}"
                encode.append(f"    if {flag} {{")
                encode.append(f"        writer.writeUnsignedVarint({field.tag})")
                encode.append(f"        var inner = KafkaWriter(capacity: 64)")
                encode.extend(indent(write_value(field, "inner", f"self.{field.swift}"), 2))
                encode.append(f"        writer.writeTaggedValue(&inner)")
                encode.append("    }")
        else:
            encode.append("    writer.writeUnsignedVarint(0)")
        encode.append("}")
    if not encode:
        encode.append("_ = writer")
    if not any("version" in line for line in encode):
        encode.append("_ = version")
    body.extend(indent(encode, 1))
    body.append("}")
    out.extend(indent(body, 1))
    out.append("}")
    return indent(out, level)


def sample_value(field, type_path):
    """A Swift expression for a sample value of the field (tests' SampleSource)."""
    compact = compact_expr(field)
    top = type_path.split(".")[0]
    label = f'"{type_path.split(".")[-1]}.{field.name}"'

    def element():
        if field.is_struct:
            return f"{top}.{field.base}.sample(&source, version: version)"
        if field.base == "string":
            return f"source.string({label}, compact: {compact})"
        if field.base == "bytes":
            return f"source.bytes({label}, compact: {compact})"
        return f"source.{field.base}({label})"

    if field.array:
        items = f"source.array({label}, compact: {compact}) {{ source in {element()} }}"
        if field.nullable:
            return f"source.isNull({label}) ? nil : {items}"
        return items
    if field.is_struct:
        value = f"{top}.{field.base}.sample(&source, version: version)"
        return f"source.isNull({label}) ? nil : {value}" if field.nullable else value
    if field.base == "records":
        return f"source.records({label})"
    if field.base in ("string", "bytes"):
        value = element()
        return f"source.isNull({label}) ? nil : {value}" if field.nullable else value
    return element()


def sample_code(struct, valid, flexible_versions, type_path):
    """`static func sample(_:version:)` for a struct: every field set from the source."""
    flexible = condition(flexible_versions, valid) if flexible_versions else "false"
    HAS_FLEXIBLE[0] = flexible != "false"
    out = [f"extension {type_path} {{"]
    out.append("    static func sample(_ source: inout SampleSource, version: Int16) -> Self {")
    if HAS_FLEXIBLE[0]:
        out.append(f"        let flexible = {flexible}")
    out.append("        var message = Self()")
    for field in struct.fields:
        out.append(f"        message.{field.swift} = {sample_value(field, type_path)}")
    if HAS_FLEXIBLE[0] and not any("compact: flexible" in line for line in out):
        out.remove(f"        let flexible = {flexible}")
    if not any("version" in line for line in out[2:]):
        out.append("        _ = version")
    out.append("        return message")
    out.append("    }")
    out.append("}")
    return out


def parse_schema(schema):
    """A message definition's valid and flexible versions, its top struct, and its
    nested and common structs."""
    valid = parse_versions(schema["validVersions"])
    flexible_versions = parse_versions(schema.get("flexibleVersions", "none"))
    structs = []
    top = Struct(schema["name"], schema["fields"], structs, flexible_versions)
    for common in schema.get("commonStructs", []):
        structs.append(Struct(common["name"], common["fields"], structs, flexible_versions))
    return valid, flexible_versions, top, structs


def samples_code(schema):
    valid, flexible_versions, top, structs = parse_schema(schema)
    lines = sample_code(top, valid, flexible_versions, top.name)
    for struct in sorted(structs, key=lambda s: s.name):
        lines.append("")
        lines.extend(sample_code(struct, valid, flexible_versions, f"{top.name}.{struct.name}"))
    return lines


def message_code(schema):
    valid, flexible_versions, top, structs = parse_schema(schema)
    lines = struct_code(top, valid, flexible_versions, 0, "KafkaMessage")
    # Nested types go inside the message's namespace, before its closing brace.
    closing = lines.pop()
    if structs:
        for struct in sorted(structs, key=lambda s: s.name):
            lines.append("")
            lines.extend(struct_code(struct, valid, flexible_versions, 1, "Sendable, Equatable"))
    lines.append("")
    low, high = valid
    lines.append(f"    /// Versions the definition describes.")
    lines.append(f"    public static let validVersions: ClosedRange<Int16> = {low}...{high if high is not None else 32767}")
    flex = f"{flexible_versions[0]}" if flexible_versions else "nil"
    lines.append(f"    /// The first version with compact encodings and tagged fields (nil: none).")
    lines.append(f"    public static let firstFlexibleVersion: Int16? = {flex}")
    if "apiKey" in schema:
        lines.append(f"    public static let apiKey: Int16 = {schema['apiKey']}")
    lines.append(closing)
    return lines


HEADER = [
    "// Generated by scripts/kafka-codegen.py from Sources/AqueductKafka/Schemas",
    "// (Apache Kafka's message definitions). Do not edit: change the generator and rerun it.",
    "// swift-format-ignore-file",
    "import NIOCore",
    "",
]


def generate():
    files = {}
    schemas = {}
    for name in sorted(os.listdir(SCHEMAS)):
        if name.endswith(".json"):
            schemas[name[:-5]] = load(os.path.join(SCHEMAS, name))
    apis = sorted({n[: -len("Request")] for n in schemas if n.endswith("Request") and n + "" != "RequestHeader"} - {""})
    api_rows = []
    for api in apis:
        request = schemas.get(api + "Request")
        response = schemas.get(api + "Response")
        if request is None or response is None or "apiKey" not in request:
            continue
        lines = list(HEADER)
        lines.extend(message_code(request))
        lines.append("")
        lines.extend(message_code(response))
        files[api + ".swift"] = "\n".join(lines) + "\n"
        api_rows.append((request["apiKey"], api))
    for name in ("RequestHeader", "ResponseHeader", "ConsumerProtocolSubscription", "ConsumerProtocolAssignment"):
        lines = list(HEADER)
        lines.extend(message_code(schemas[name]))
        files[name + ".swift"] = "\n".join(lines) + "\n"
    # The API keys, with their request and response types.
    lines = list(HEADER)
    lines.append("/// The Kafka APIs whose messages are generated, by API key.")
    lines.append("public enum KafkaAPIKey: Int16, CaseIterable, Sendable {")
    for key, api in sorted(api_rows):
        lines.append(f"    case {api[0].lower() + api[1:]} = {key}")
    lines.append("")
    lines.append("    /// The versions the message definitions describe (what this broker can decode).")
    lines.append("    public var definedVersions: ClosedRange<Int16> {")
    lines.append("        switch self {")
    for key, api in sorted(api_rows):
        lines.append(f"        case .{api[0].lower() + api[1:]}: {api}Request.validVersions")
    lines.append("        }")
    lines.append("    }")
    lines.append("")
    lines.append("    /// The first request version with flexible encodings (request header v2).")
    lines.append("    public var firstFlexibleVersion: Int16? {")
    lines.append("        switch self {")
    for key, api in sorted(api_rows):
        lines.append(f"        case .{api[0].lower() + api[1:]}: {api}Request.firstFlexibleVersion")
    lines.append("        }")
    lines.append("    }")
    lines.append("}")
    files["KafkaAPIKey.swift"] = "\n".join(lines) + "\n"
    # For the tests: every request filled from a SampleSource (extreme or random values).
    lines = [
        "// Generated by scripts/kafka-codegen.py from Sources/AqueductKafka/Schemas.",
        "// Do not edit: change the generator and rerun it.",
        "// Every request type filled from a SampleSource, for HostileExchangeTests.",
        "// swift-format-ignore-file",
        "import AqueductKafka",
        "import NIOCore",
        "",
        "/// Builds a sample of any request for a served API key.",
        "func sampleRequest(_ key: KafkaAPIKey, version: Int16, _ source: inout SampleSource) -> any KafkaMessage {",
        "    switch key {",
    ]
    for key, api in sorted(api_rows):
        lines.append(f"    case .{api[0].lower() + api[1:]}: {api}Request.sample(&source, version: version)")
    lines.append("    }")
    lines.append("}")
    lines.append("")
    lines.append("/// Decodes a response to a served API key at `version`.")
    lines.append("func decodeResponse(_ key: KafkaAPIKey, version: Int16, _ reader: inout KafkaReader) throws(KafkaProtocolError) -> any KafkaMessage {")
    lines.append("    switch key {")
    for key, api in sorted(api_rows):
        lines.append(f"    case .{api[0].lower() + api[1:]}: try {api}Response(from: &reader, version: version)")
    lines.append("    }")
    lines.append("}")
    for key, api in sorted(api_rows):
        lines.append("")
        lines.extend(samples_code(schemas[api + "Request"]))
    files[SAMPLES_NAME] = "\n".join(lines) + "\n"
    return files


def main():
    check = "--check" in sys.argv[1:]
    files = generate()
    existing = {n for n in os.listdir(OUTPUT) if n.endswith(".swift")} if os.path.isdir(OUTPUT) else set()
    existing.add(SAMPLES_NAME)
    if check:
        stale = [n for n, text in files.items() if not os.path.exists(os.path.join(OUTPUT, n))
                 or open(os.path.join(OUTPUT, n)).read() != text]
        stale += sorted(existing - set(files))
        if stale:
            print("kafka-codegen: generated code is out of date: " + ", ".join(sorted(stale)))
            print("run scripts/kafka-codegen.py and commit the result")
            sys.exit(1)
        print(f"kafka-codegen: {len(files)} generated files are up to date")
        return
    os.makedirs(OUTPUT, exist_ok=True)
    os.makedirs(os.path.dirname(os.path.normpath(os.path.join(OUTPUT, SAMPLES_NAME))), exist_ok=True)
    for name in existing - set(files):
        os.remove(os.path.join(OUTPUT, name))
    for name, text in files.items():
        with open(os.path.join(OUTPUT, name), "w") as out:
            out.write(text)
    print(f"kafka-codegen: wrote {len(files)} files to {os.path.relpath(OUTPUT, ROOT)}")


if __name__ == "__main__":
    main()
