"""What the ``recsys`` CLI runs that is not a service: the local stack, the demo and compare, synthetic
data, EDA and the offline evaluation. Tools may import services' domain modules; nothing imports tools."""
