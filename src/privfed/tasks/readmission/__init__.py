"""Task ``readmission``: multimodal longitudinal 30-day readmission risk (Low/Medium/High)."""
