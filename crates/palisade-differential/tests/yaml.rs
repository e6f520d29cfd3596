//! What a failure prints must replay it: the YAML of a random intent loads
//! back (validation accepts it) into an intent that decides every flow as
//! the original does, and each flow's `palisade explain` request resolves to
//! the same flow.

use palisade_differential::flows::flow_choice;
use palisade_differential::intents::{intent, Shape, NODE};
use palisade_differential::yaml::to_yaml;
use palisade_model::{load_str, LoadOptions};
use palisade_policy::evaluate;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_yaml_and_the_explain_command_replay_the_case(
        original in intent(Shape::default()),
        choices in prop::collection::vec(flow_choice(), 24),
    ) {
        let yaml = to_yaml(&original);
        let loaded = load_str(&yaml, "intent.yaml", &LoadOptions::default())
            .map_err(|d| TestCaseError::fail(format!("{d}\n{yaml}")))?;
        prop_assert_eq!(&loaded.tenants, &original.tenants);
        prop_assert_eq!(&loaded.tiers, &original.tiers);
        prop_assert_eq!(&loaded.endpoints, &original.endpoints);
        prop_assert_eq!(loaded.policies.len(), original.policies.len());
        for choice in &choices {
            let Some(flow) = choice.resolve(&original, NODE) else { continue };
            let want = evaluate(&original, &flow.evaluator_flow(&original));
            let request = flow.request(&original);
            let replayed = request
                .resolve(&loaded)
                .map_err(|e| TestCaseError::fail(format!("{request:?}: {e}")))?;
            prop_assert_eq!(evaluate(&loaded, &replayed), want, "{:?}\n{}", request, yaml);
        }
    }
}
