"""Review histories and model outputs shared by the profiler's pure-function tests."""

from __future__ import annotations

import json

VOCAB = [
    "face serum",
    "dry skin",
    "lipstick",
    "sunscreen",
    "fragrance free",
    "night cream",
    "lightweight",
    "long lasting",
    "matte",
    "shampoo",
    "argan oil",
    "dry hair",
]
TITLES = {"A1": "Hydrating Face Serum", "A2": "Matte Lipstick Red", "A3": "Mineral Sunscreen SPF 50"}
REVIEWS = [
    {
        "user_id": "u1",
        "parent_asin": "A1",
        "timestamp": 1_700_000_300_000,
        "rating": 5,
        "title": "Love it",
        "text": "This face serum is lightweight and great for my dry skin. Fragrance free too.",
    },
    {
        "user_id": "u1",
        "parent_asin": "A2",
        "timestamp": 1_700_000_200_000,
        "rating": 2,
        "title": "Meh",
        "text": "The lipstick is not long lasting and the matte finish is drying.",
    },
    {
        "user_id": "u1",
        "parent_asin": "A3",
        "timestamp": 1_700_000_100_000,
        "rating": 4,
        "title": "",
        "text": "Good sunscreen, lightweight, no white cast.",
    },
]
GOOD_JSON = json.dumps(
    {
        "preferred_products": ["face serum", "sunscreen"],
        "liked_features": ["lightweight"],
        "dislikes": ["drying lipstick"],
        "potential_interests": ["night cream"],
    }
)
THREE = (
    "She buys skincare for dry skin. She values lightweight, fragrance free formulas. "
    "She will likely buy a night cream next."
)
