//! Telemetry (§1.12, §2.8).

use super::common;
use super::{Meta, target_refs_schema, target_refs_webhook};
use crate::diag::Report;
use crate::path::Path;
use crate::types::OrEmpty;
use crate::types::telemetry::{ProviderRef, TagOperation, Telemetry};

fn providers_schema(r: &mut Report, p: &Path<'_>, providers: &[ProviderRef]) {
    let pp = p.key("providers");
    for (i, provider) in providers.iter().enumerate() {
        if provider.name.as_deref().is_some_and(str::is_empty) {
            r.body(&pp.index(i).key("name"), "should be at least 1 chars long");
        }
    }
}

/// CRD rules.
pub fn schema(r: &mut Report, spec: &Path<'_>, t: &Telemetry, _meta: &Meta<'_>) {
    if let Some(sel) = &t.selector {
        common::match_labels_schema(r, &spec.key("selector"), sel);
    }
    target_refs_schema(
        r,
        spec,
        t.selector.is_some(),
        t.target_ref.as_ref(),
        t.target_refs.or_empty(),
    );
    let tp = spec.key("tracing");
    for (i, tr) in t.tracing.or_empty().iter().enumerate() {
        let p = tp.index(i);
        providers_schema(r, &p, tr.providers.or_empty());
        if let Some(pct) = tr.random_sampling_percentage {
            if pct < 0.0 {
                r.body(
                    &p.key("randomSamplingPercentage"),
                    "should be greater than or equal to 0",
                );
            } else if pct > 100.0 {
                r.body(
                    &p.key("randomSamplingPercentage"),
                    "should be less than or equal to 100",
                );
            }
        }
        let cp = p.key("customTags");
        for (name, tag) in tr.custom_tags.iter().flatten() {
            let set = [
                tag.literal.is_some(),
                tag.environment.is_some(),
                tag.header.is_some(),
                tag.formatter.is_some(),
            ];
            if set.iter().filter(|b| **b).count() > 1 {
                r.invalid(
                    &cp.key(name),
                    "\"object\"",
                    "only one of literal, environment, header or formatter can be set",
                );
            }
        }
    }
    let mp = spec.key("metrics");
    for (i, m) in t.metrics.or_empty().iter().enumerate() {
        let p = mp.index(i);
        providers_schema(r, &p, m.providers.or_empty());
        if let Some(d) = &m.reporting_interval {
            common::duration_schema(r, &p.key("reportingInterval"), d);
        }
        let op = p.key("overrides");
        for (j, o) in m.overrides.or_empty().iter().enumerate() {
            let jp = op.index(j);
            if let Some(sel) = &o.r#match {
                let sp = jp.key("match");
                if sel.metric.is_some() && sel.custom_metric.is_some() {
                    r.invalid(&sp, "\"object\"", "only one of metric or customMetric can be set");
                }
                if sel.custom_metric.as_deref() == Some("") {
                    r.body(&sp.key("customMetric"), "should be at least 1 chars long");
                }
            }
            let tp = jp.key("tagOverrides");
            for (name, tag) in o.tag_overrides.iter().flatten() {
                let tagp = tp.key(name);
                match tag.operation {
                    Some(TagOperation::Upsert) if tag.value.as_deref().is_none_or(str::is_empty) => {
                        r.invalid(&tagp, "\"object\"", "value must be set when operation is UPSERT");
                    }
                    Some(TagOperation::Remove) if tag.value.is_some() => {
                        r.invalid(
                            &tagp,
                            "\"object\"",
                            "value must not be set when operation is REMOVE",
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    let ap = spec.key("accessLogging");
    for (i, a) in t.access_logging.or_empty().iter().enumerate() {
        providers_schema(r, &ap.index(i), a.providers.or_empty());
    }
}

fn providers(r: &mut Report, p: &Path<'_>, providers: &[ProviderRef]) {
    if providers.len() > 1 {
        r.warn(
            &p.key("providers"),
            "multiple providers is not currently supported",
        );
    }
    for (i, provider) in providers.iter().enumerate() {
        if provider.name.as_deref().is_none_or(str::is_empty) {
            r.error(&p.key("providers").index(i), "providers.name may not be empty");
        }
    }
}

/// Webhook rules.
pub fn webhook(r: &mut Report, spec: &Path<'_>, t: &Telemetry, _meta: &Meta<'_>) {
    if let Some(sel) = &t.selector {
        common::match_labels(r, &spec.key("selector"), sel);
    }
    let single = spec.key("targetRef");
    let many = spec.key("targetRefs");
    let mut refs: Vec<(Path<'_>, &crate::types::PolicyTargetReference)> =
        t.target_ref.iter().map(|r| (single, r)).collect();
    refs.extend(
        t.target_refs
            .or_empty()
            .iter()
            .enumerate()
            .map(|(i, r)| (many.index(i), r)),
    );
    target_refs_webhook(r, &refs);
    let tracing = t.tracing.or_empty();
    let tp = spec.key("tracing");
    if tracing.len() > 1 {
        r.warn(&tp, "multiple tracing is not currently supported");
    }
    for (i, tr) in tracing.iter().enumerate() {
        let p = tp.index(i);
        providers(r, &p, tr.providers.or_empty());
        if let Some(pct) = tr.random_sampling_percentage
            && !(0.0..=100.0).contains(&pct)
        {
            r.error(
                &p.key("randomSamplingPercentage"),
                "randomSamplingPercentage must be in range [0.0, 100.0]",
            );
        }
        let cp = p.key("customTags");
        for (name, tag) in tr.custom_tags.iter().flatten() {
            let tagp = cp.key(name);
            if name.is_empty() {
                r.error(&tagp, "tag name may not be empty");
            }
            if tag.literal.is_none()
                && tag.environment.is_none()
                && tag.header.is_none()
                && tag.formatter.is_none()
            {
                r.error(&tagp, "must set one of literal, environment, header or formatter");
            }
            let empty = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
            if tag.literal.as_ref().is_some_and(|l| empty(&l.value)) {
                r.error(&tagp.key("literal"), "literal value may not be empty");
            }
            if tag.environment.as_ref().is_some_and(|e| empty(&e.name)) {
                r.error(&tagp.key("environment"), "environment name may not be empty");
            }
            if tag.header.as_ref().is_some_and(|h| empty(&h.name)) {
                r.error(&tagp.key("header"), "header name may not be empty");
            }
            if tag.formatter.as_ref().is_some_and(|f| empty(&f.value)) {
                r.error(&tagp.key("formatter"), "formatter value may not be empty");
            }
        }
    }
    let mp = spec.key("metrics");
    for (i, m) in t.metrics.or_empty().iter().enumerate() {
        let p = mp.index(i);
        providers(r, &p, m.providers.or_empty());
        if let Some(d) = &m.reporting_interval {
            common::duration(r, &p.key("reportingInterval"), d);
        }
        let op = p.key("overrides");
        for (j, o) in m.overrides.or_empty().iter().enumerate() {
            let jp = op.index(j);
            let tp = jp.key("tagOverrides");
            for (name, tag) in o.tag_overrides.iter().flatten() {
                let tagp = tp.key(name);
                if name.is_empty() {
                    r.error(&tagp, "tag name may not be empty");
                }
                let value_set = tag.value.as_deref().is_some_and(|v| !v.is_empty());
                match tag.operation.unwrap_or_default() {
                    TagOperation::Upsert if !value_set => r.error(&tagp, "must provide a value for UPSERT"),
                    TagOperation::Remove if value_set => r.error(&tagp, "cannot provide a value for REMOVE"),
                    _ => {}
                }
            }
        }
    }
    let ap = spec.key("accessLogging");
    for (i, a) in t.access_logging.or_empty().iter().enumerate() {
        let p = ap.index(i);
        providers(r, &p, a.providers.or_empty());
        if let Some(expr) = a.filter.as_ref().and_then(|f| f.expression.as_deref())
            && expr.trim().is_empty()
        {
            r.error(
                &p.key("filter").key("expression"),
                "must be a valid CEL expression, empty expression",
            );
        }
    }
}
