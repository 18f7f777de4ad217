//! The CustomResourceDefinitions under `schemas/`: generated from the spec types,
//! valid as apiextensions.k8s.io/v1 (structural, a status subresource, printer
//! columns that point at status fields), and every checked-in spec document is a
//! custom resource they accept. No API server can run on these machines, so the
//! checks an API server would make on a CRD are made here on the document.

use std::path::{Path, PathBuf};
use std::process::Command;

use reconciler::spec::crd::{CrdKind, GROUP, VERSION, crd_yaml};
use reconciler::spec::crd_status::{
    BackupPipelineStatus, ResourceCondition, ResourceConditionStatus,
};
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("a YAML document")
}

/// The CRD of a kind, as checked in.
fn checked_in(kind: CrdKind) -> Value {
    let path = root().join("schemas").join(kind.file_name());
    yaml(&std::fs::read_to_string(&path).unwrap())
}

fn kind_named(name: &str) -> CrdKind {
    match name {
        "BackupPipeline" => CrdKind::BackupPipeline,
        "RestoreTarget" => CrdKind::RestoreTarget,
        other => panic!("no CRD for kind {other}"),
    }
}

/// The only version's openAPIV3Schema.
fn schema_of(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
}

fn validator(schema: &Value) -> jsonschema::Validator {
    // OpenAPI v3's schema dialect is JSON Schema draft 4 plus `nullable` and
    // `x-kubernetes-*`, which draft 4 ignores as unknown keywords.
    jsonschema::draft4::options()
        .should_validate_formats(true)
        .build(schema)
        .expect("the openAPIV3Schema compiles as JSON Schema")
}

fn errors(schema: &Value, instance: &Value) -> Vec<String> {
    validator(schema)
        .iter_errors(instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn checked_in_crds_match_the_types() {
    for kind in CrdKind::ALL {
        let path = root().join("schemas").join(kind.file_name());
        let generated = crd_yaml(kind).unwrap();
        if std::env::var_os("UPDATE_SCHEMAS").is_some() {
            std::fs::write(&path, &generated).unwrap();
        }
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == generated,
            "{} is stale: run `UPDATE_SCHEMAS=1 cargo test --test crd` (or `reconciler crd --kind {kind:?} > {}`) and commit it",
            path.display(),
            path.display()
        );
    }
}

#[test]
fn reconciler_crd_prints_both_checked_in_crds() {
    let out = Command::new(env!("CARGO_BIN_EXE_reconciler"))
        .arg("crd")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let expected: Vec<String> = CrdKind::ALL
        .iter()
        .map(|k| std::fs::read_to_string(root().join("schemas").join(k.file_name())).unwrap())
        .collect();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        expected.join("---\n")
    );
}

#[test]
fn each_crd_is_apiextensions_v1_with_a_status_subresource() {
    for (kind, plural) in [
        (CrdKind::BackupPipeline, "backuppipelines"),
        (CrdKind::RestoreTarget, "restoretargets"),
    ] {
        let crd = checked_in(kind);
        assert_eq!(crd["apiVersion"], "apiextensions.k8s.io/v1");
        assert_eq!(crd["kind"], "CustomResourceDefinition");
        assert_eq!(crd["metadata"]["name"], format!("{plural}.{GROUP}"));
        assert_eq!(crd["spec"]["group"], GROUP);
        assert_eq!(crd["spec"]["names"]["kind"], format!("{kind:?}"));
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let versions = crd["spec"]["versions"].as_array().unwrap();
        assert_eq!(versions.len(), 1, "{kind:?}");
        let version = &versions[0];
        assert_eq!(version["name"], VERSION);
        assert_eq!(version["served"], true);
        assert_eq!(version["storage"], true);
        assert_eq!(
            version["subresources"]["status"],
            json!({}),
            "{kind:?} has no status subresource"
        );
        let schema = schema_of(&crd);
        assert_eq!(schema["properties"]["status"]["type"], "object");
        assert_eq!(schema["required"], json!(["spec"]));
        // The spec is the document's spec, not a wrapper around it.
        assert!(
            schema["properties"]["spec"]["properties"]
                .as_object()
                .unwrap()
                .len()
                >= 4,
            "{kind:?}: {}",
            schema["properties"]["spec"]
        );
    }
}

/// Walks a schema, collecting what an API server would refuse in a structural
/// schema: a node without `type`, a branch of `oneOf`/`anyOf`/`allOf`/`not`
/// that sets what only the node itself may, and keywords apiextensions/v1 lacks.
fn structural_problems(schema: &Value, path: &str, in_junctor: bool, out: &mut Vec<String>) {
    let Some(node) = schema.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for key in node.keys() {
        let known = [
            "type",
            "format",
            "title",
            "description",
            "default",
            "maximum",
            "exclusiveMaximum",
            "minimum",
            "exclusiveMinimum",
            "maxLength",
            "minLength",
            "pattern",
            "maxItems",
            "minItems",
            "multipleOf",
            "enum",
            "maxProperties",
            "minProperties",
            "required",
            "items",
            "allOf",
            "oneOf",
            "anyOf",
            "not",
            "properties",
            "additionalProperties",
            "example",
            "nullable",
        ];
        if !known.contains(&key.as_str()) && !key.starts_with("x-kubernetes-") {
            out.push(format!("{path}: `{key}` is not a field of JSONSchemaProps"));
        }
    }
    let has = |k: &str| node.contains_key(k);
    if in_junctor {
        for forbidden in [
            "type",
            "description",
            "default",
            "nullable",
            "additionalProperties",
        ] {
            if has(forbidden) {
                out.push(format!(
                    "{path}: `{forbidden}` inside a oneOf/anyOf/allOf/not"
                ));
            }
        }
    } else if !has("type")
        && !has("x-kubernetes-int-or-string")
        && !has("x-kubernetes-preserve-unknown-fields")
    {
        out.push(format!("{path}: no `type`"));
    }
    if has("properties") && has("additionalProperties") {
        out.push(format!(
            "{path}: both `properties` and `additionalProperties`"
        ));
    }
    if node.get("additionalProperties") == Some(&Value::Bool(false)) {
        out.push(format!("{path}: `additionalProperties: false`"));
    }
    if let Some(properties) = node.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            structural_problems(property, &format!("{path}.{name}"), in_junctor, out);
        }
    }
    for key in ["items", "additionalProperties", "not"] {
        if let Some(inner) = node.get(key).filter(|v| v.is_object()) {
            structural_problems(
                inner,
                &format!("{path}/{key}"),
                in_junctor || key == "not",
                out,
            );
        }
    }
    for key in ["oneOf", "anyOf", "allOf"] {
        for (i, branch) in node
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural_problems(branch, &format!("{path}/{key}[{i}]"), true, out);
        }
    }
}

#[test]
fn each_crd_schema_is_structural() {
    for kind in CrdKind::ALL {
        let mut problems = Vec::new();
        structural_problems(schema_of(&checked_in(kind)), "", false, &mut problems);
        assert!(problems.is_empty(), "{kind:?}: {problems:#?}");
    }
}

#[test]
fn printer_columns_show_ready_and_ages_from_status() {
    for (kind, ages) in [
        (CrdKind::BackupPipeline, ["Backup", "Volume"]),
        (CrdKind::RestoreTarget, ["Source", "Restored"]),
    ] {
        let crd = checked_in(kind);
        let status = &schema_of(&crd)["properties"]["status"]["properties"];
        let columns = crd["spec"]["versions"][0]["additionalPrinterColumns"]
            .as_array()
            .unwrap();
        let column = |name: &str| {
            columns
                .iter()
                .find(|c| c["name"] == name)
                .unwrap_or_else(|| panic!("{kind:?}: no {name} column"))
        };
        let ready = column("Ready");
        assert_eq!(ready["type"], "string");
        assert_eq!(
            ready["jsonPath"],
            r#".status.conditions[?(@.type=="Ready")].status"#
        );
        assert!(status["conditions"]["items"]["properties"]["type"].is_object());
        for name in ages {
            let column = column(name);
            assert_eq!(column["type"], "date", "{kind:?} {name}");
            let path = column["jsonPath"].as_str().unwrap();
            let field = path
                .strip_prefix(".status.")
                .unwrap_or_else(|| panic!("{kind:?} {name}: {path} is not in status"));
            assert_eq!(
                status[field]["format"], "date-time",
                "{kind:?} {name}: {path} is not a date-time field of the status"
            );
        }
    }
}

/// Every spec document in the repository, as raw YAML turned into JSON.
fn checked_in_documents() -> Vec<(PathBuf, Value)> {
    let mut documents = Vec::new();
    for dir in ["specs/annex", "specs/science", "examples"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                let document = yaml(&std::fs::read_to_string(&path).unwrap());
                documents.push((path, document));
            }
        }
    }
    documents.sort_by(|a, b| a.0.cmp(&b.0));
    documents
}

fn short(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_checked_in_spec_is_a_custom_resource_its_crd_accepts() {
    let documents = checked_in_documents();
    assert!(documents.len() >= 6, "{documents:?}");
    let mut kinds_seen = Vec::new();
    for (path, document) in &documents {
        let kind = kind_named(document["kind"].as_str().unwrap());
        kinds_seen.push(kind);
        // The document is sent as it is written: the same apiVersion, kind,
        // metadata and spec.
        assert_eq!(
            document["apiVersion"],
            format!("{GROUP}/{VERSION}"),
            "{}",
            short(path)
        );
        let crd = checked_in(kind);
        assert_eq!(document["kind"], crd["spec"]["names"]["kind"]);
        let problems = errors(schema_of(&crd), document);
        assert!(problems.is_empty(), "{}: {problems:#?}", short(path));
    }
    assert!(kinds_seen.contains(&CrdKind::BackupPipeline));
    assert!(kinds_seen.contains(&CrdKind::RestoreTarget));
}

/// A change that breaks a valid document.
type Breakage = fn(&mut Value);

#[test]
fn a_spec_the_loader_refuses_for_its_fields_is_refused_by_the_crd_too() {
    let (_, pipeline) = checked_in_documents()
        .into_iter()
        .find(|(p, _)| p.ends_with("specs/annex/montagu.yaml"))
        .unwrap();
    let schema = schema_of(&checked_in(CrdKind::BackupPipeline)).clone();
    let broken = |change: Breakage| {
        let mut document = pipeline.clone();
        change(&mut document);
        errors(&schema, &document)
    };
    assert!(errors(&schema, &pipeline).is_empty());
    let cases: [(&str, Breakage); 5] = [
        ("a duration that is not one", |d| {
            d["spec"]["baseBackup"]["maxAge"] = json!("soon")
        }),
        ("retention with neither rule", |d| {
            d["spec"]["retention"] = json!({"minimumRedundancy": 1})
        }),
        ("a relative path", |d| {
            d["spec"]["recoveredVolume"]["replay"]["postgresBin"] = json!("bin")
        }),
        ("a missing barman section", |d| {
            d["spec"].as_object_mut().unwrap().remove("barman");
        }),
        ("a volume with both locations", |d| {
            d["spec"]["recoveredVolume"]["dockerVolume"] = json!("v");
            d["spec"]["recoveredVolume"]["path"] = json!("/srv/v");
        }),
    ];
    for (what, change) in cases {
        assert!(!broken(change).is_empty(), "{what} was accepted");
    }
}

#[test]
fn a_status_as_the_reconciler_reports_it_fits_the_status_schema() {
    let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
    let condition = |kind: &str, status, reason: &str, subject: Option<&str>| ResourceCondition {
        kind: kind.to_string(),
        status,
        reason: reason.to_string(),
        message: format!("{kind} says {reason}"),
        subject: subject.map(String::from),
        last_transition_time: at("2026-12-04T01:02:03Z"),
        observed_generation: Some(3),
    };
    let status = BackupPipelineStatus {
        observed_generation: Some(3),
        conditions: vec![
            condition(
                "BaseBackupFresh",
                ResourceConditionStatus::True,
                "Fresh",
                None,
            ),
            condition(
                "MirrorInSync",
                ResourceConditionStatus::False,
                "Behind",
                Some("offsite"),
            ),
            condition(
                "MirrorInSync",
                ResourceConditionStatus::True,
                "InSync",
                Some("second"),
            ),
            condition(
                "Ready",
                ResourceConditionStatus::False,
                "NotConverged",
                None,
            ),
        ],
        newest_backup_finished_at: Some(at("2026-12-03T04:00:00Z")),
        volume_recovered_at: Some(at("2026-12-03T06:30:00Z")),
        waiting_on: vec!["the start window opens at 00:00 Europe/London".into()],
        next_reconcile_at: Some(at("2026-12-05T00:00:00Z")),
    };
    let crd = checked_in(CrdKind::BackupPipeline);
    let status_schema = &schema_of(&crd)["properties"]["status"];
    let value = serde_json::to_value(&status).unwrap();
    assert_eq!(value["conditions"][3]["type"], "Ready");
    assert_eq!(value["newestBackupFinishedAt"], "2026-12-03T04:00:00Z");
    let problems = errors(status_schema, &value);
    assert!(problems.is_empty(), "{problems:#?}");
    let mut wrong = value.clone();
    wrong["conditions"][0]["status"] = json!("Maybe");
    assert!(!errors(status_schema, &wrong).is_empty());
}

#[test]
fn every_condition_run_records_converts_into_a_status_the_crd_accepts() {
    use reconciler::plan::{Condition, ConditionStatus, ConditionType, Reason};
    use reconciler::runtime::status::StatusCondition;

    let statuses = [
        ConditionStatus::True,
        ConditionStatus::False,
        ConditionStatus::Unknown,
    ];
    let recorded: Vec<StatusCondition> = Reason::ALL
        .iter()
        .enumerate()
        .map(|(i, reason)| StatusCondition {
            condition: Condition {
                kind: ConditionType::MirrorInSync,
                status: statuses[i % 3],
                reason: reason.clone(),
                message: format!("because {reason}"),
                subject: Some("offsite".into()),
            },
            last_transition_time: "2026-12-04T01:02:03Z".parse().unwrap(),
            observed_generation: 7,
        })
        .collect();
    let status = BackupPipelineStatus {
        conditions: recorded.iter().map(ResourceCondition::from).collect(),
        ..Default::default()
    };
    // The same words `reconciler status --output json` writes.
    for (converted, original) in status.conditions.iter().zip(&recorded) {
        let original = serde_json::to_value(original).unwrap();
        let converted = serde_json::to_value(converted).unwrap();
        for field in [
            "type",
            "status",
            "reason",
            "message",
            "subject",
            "lastTransitionTime",
            "observedGeneration",
        ] {
            assert_eq!(converted[field], original[field], "{field}");
        }
    }
    let crd = checked_in(CrdKind::BackupPipeline);
    let status_schema = &schema_of(&crd)["properties"]["status"];
    let problems = errors(status_schema, &serde_json::to_value(&status).unwrap());
    assert!(problems.is_empty(), "{problems:#?}");
}
